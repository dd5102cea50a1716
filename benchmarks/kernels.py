"""Benchmark matdx.kernels against freud, MDAnalysis, ASE, pymatgen-analysis-diffusion, tidynamics.

A script, not a test. It generates seeded trajectories (orthorhombic and triclinic cells),
runs matdx's kernels and every installed peer on the same data in the same process, checks
that the results agree, and prints a table of median times and peer/matdx ratios, the
speed targets at 10,000 atoms, and the first-call (compile) cost of every kernel.

    python benchmarks/kernels.py                 # 1,000 and 10,000 atoms (< 3 min, 2 cores)
    python benchmarks/kernels.py --large         # also 100,000 atoms
    python benchmarks/kernels.py --sizes 10000 --repeats 7 --threads 2

Threads: numba, OpenMP, BLAS and freud (TBB) all get ``--threads`` (default: all cores),
set before any of them is imported. Numba compiles into a fresh temporary cache directory
so the first-call times are true compile times; a second process then measures loading
the same kernels from that cache.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

DENSITY = 0.05  # atoms / Å³, liquid-like
NEIGHBOR_CUTOFF = 5.0  # Å: ~26 neighbours per atom
RDF_R_MAX = 10.0  # Å: ~210 neighbours per atom
RDF_BINS = 200
TIMESTEP = 2.0  # fs between stored frames
FRAMES = {  # per size: (g(r) frames, MSD/VACF frames)
    1_000: (20, 2000),
    10_000: (10, 1000),
    100_000: (2, 200),
}
#: Peer runs that take minutes in pure Python are limited to these sizes.
SLOW_PEER_MAX_ATOMS = {
    "ase_rdf": 1_000,
    "mda_rdf": 10_000,
    "ase_neighbors": 10_000,
    "pymatgen": 10_000,
}
#: g(r) frames for MDAnalysis and ASE: this many atom-frames, at least one frame.
SLOW_PEER_ATOM_FRAMES = 4_000

KERNEL_MODULES = [
    "cells",
    "neighbors",
    "rdf",
    "correlation",
    "msd",
    "vacf",
    "structure_factor",
    "angles",
    "dos",
]
#: Distributions compared against (``pip install matdx[bench]``).
PEERS = ["freud-analysis", "MDAnalysis", "ase", "pymatgen-analysis-diffusion", "tidynamics"]

TARGETS = [  # (kernel, matdx variant, peer, required peer/matdx ratio)
    ("g(r)", "matdx", "freud density.RDF", 3.0),
    ("MSD", "matdx", "freud msd.MSD(window)", 2.0),
    ("neighbours", "matdx (i<j, d, vec)", "MDAnalysis nsgrid", 1.0),
    ("neighbours", "matdx (both directions)", "freud AABBQuery", 5.0),
    ("VACF", "matdx", "tidynamics acf", 5.0),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--large", action="store_true", help="add 100,000 atoms")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--cells", nargs="+", default=["orthorhombic", "triclinic"])
    parser.add_argument("--warm-cache", action="store_true", help="use numba's usual cache")
    parser.add_argument("--compile-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.large and 100_000 not in args.sizes:
        args.sizes.append(100_000)
    unknown = [s for s in args.sizes if s not in FRAMES]
    if unknown:
        parser.error(f"--sizes must be among {sorted(FRAMES)}, got {unknown}")
    return args


def configure_threads(threads: int) -> None:
    """Pin every thread pool before numpy, numba or a peer is imported.

    OpenMP threads wait passively between parallel regions: with libgomp's default
    spin-waiting, any other load on the machine makes each region wait for a preempted
    spinning thread and the numba kernels slow down several-fold.
    """
    for name in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


# ----------------------------------------------------------------------------- data


def make_cell(n_atoms: int, triclinic: bool):
    """Cell of volume n_atoms / DENSITY; the triclinic one is in the a-along-x, b-in-xy
    (lower-triangular rows) orientation that freud and MDAnalysis both use."""
    import numpy as np

    volume = n_atoms / DENSITY
    shape = np.eye(3)
    if triclinic:
        shape = np.array([[1.0, 0.0, 0.0], [0.30, 0.95, 0.0], [-0.20, 0.25, 0.90]])
    return shape * (volume / abs(np.linalg.det(shape))) ** (1.0 / 3.0)


def make_data(n_atoms: int, triclinic: bool, seed: int) -> dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    cell = make_cell(n_atoms, triclinic)
    n_rdf, n_dyn = FRAMES[n_atoms]
    frames = rng.random((n_rdf, n_atoms, 3)) @ cell
    species = np.where(np.arange(n_atoms) % 4 == 0, "Li", "O")
    # Unwrapped random walk (0.1 Å steps) and Ornstein-Uhlenbeck velocities (τ = 50 fs).
    walk = rng.random((n_atoms, 3)) @ cell + np.cumsum(
        rng.normal(scale=0.1, size=(n_dyn, n_atoms, 3)), axis=0
    )
    decay = np.exp(-TIMESTEP / 50.0)
    velocities = np.empty((n_dyn, n_atoms, 3))
    velocities[0] = rng.normal(scale=0.01, size=(n_atoms, 3))
    kick = np.sqrt(1 - decay**2) * 0.01
    for k in range(1, n_dyn):
        velocities[k] = decay * velocities[k - 1] + rng.normal(scale=kick, size=(n_atoms, 3))
    return {
        "cell": cell,
        "frames": frames,
        "species": species,
        "walk": walk,
        "velocities": velocities,
    }


# ----------------------------------------------------------------------------- timing


@dataclass
class Case:
    kernel: str
    n_atoms: int
    cell: str
    times: dict[str, float] = field(default_factory=dict)  # variant -> median s
    agreement: list[str] = field(default_factory=list)
    #: peer variant -> the matdx variant it is compared with (default: the first one)
    baseline: dict[str, str] = field(default_factory=dict)

    def ratio(self, peer: str) -> float | None:
        mine = self.baseline.get(peer) or next(
            (v for v in self.times if v.startswith("matdx")), None
        )
        return None if mine is None else self.times[peer] / self.times[mine]


#: A first run longer than this counts as a sample, and only one more run follows.
SLOW_RUN = 1.0


def measure(case: Case, runs: dict[str, Callable[[], Any]], repeats: int) -> dict[str, Any]:
    """Time every implementation of one case, interleaved; store medians in ``case.times``.

    Each implementation runs once as a warm-up (matdx kernels are already compiled by
    :func:`first_calls`, so this only fills caches), then the implementations take turns,
    ``repeats`` rounds in rotating order, so a change in the machine's load hits them alike
    and none always runs right after a slow one (when the idle numba threads must wake up
    again). A warm-up longer than ``SLOW_RUN`` counts as a sample and is followed by one
    more run only. Returns the result of each implementation's last run.
    """
    results: dict[str, Any] = {}
    samples: dict[str, list[float]] = {}
    rounds: dict[str, int] = {}
    for name, fn in runs.items():
        start = time.perf_counter()
        results[name] = fn()
        first = time.perf_counter() - start
        slow = first > SLOW_RUN
        samples[name] = [first] if slow else []
        rounds[name] = 1 if slow else repeats
    names = list(runs)
    for r in range(max(rounds.values(), default=0)):
        # Rotate the order so no implementation always follows the same (slow) one.
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn = runs[name]
            if r < rounds[name]:
                start = time.perf_counter()
                results[name] = fn()
                samples[name].append(time.perf_counter() - start)
    for name, values in samples.items():
        case.times[name] = statistics.median(values)
    return results


def agree(case: Case, what: str, error: float, tolerance: float) -> None:
    status = "ok" if error <= tolerance else "MISMATCH"
    case.agreement.append(f"{what}: max |Δ| = {error:.2e} (tolerance {tolerance:.0e}) {status}")


# ----------------------------------------------------------------------------- peers


def optional(module: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        return None


def box_dimensions(cell):
    """MDAnalysis box [a, b, c, alpha, beta, gamma] (Å, degrees) of a cell."""
    import numpy as np

    lengths = np.linalg.norm(cell, axis=1)

    def angle(u, v):
        return np.degrees(np.arccos(u @ v / np.linalg.norm(u) / np.linalg.norm(v)))

    angles = [angle(cell[1], cell[2]), angle(cell[0], cell[2]), angle(cell[0], cell[1])]
    return np.concatenate([lengths, angles]).astype(np.float32)


def freud_system(freud, cell, positions):
    """freud wants box vectors as columns and positions centred on the box origin."""
    import numpy as np

    box = freud.box.Box.from_matrix(cell.T)
    frac = positions @ np.linalg.inv(cell)
    frac -= np.floor(frac) + 0.5
    return box, (frac @ cell).astype(np.float32)


def mda_universe(mda, frames, cell):
    from MDAnalysis.coordinates.memory import MemoryReader

    universe = mda.Universe.empty(frames.shape[1], trajectory=True)
    universe.load_new(
        frames.astype("float32"), format=MemoryReader, dimensions=box_dimensions(cell)
    )
    return universe


# ----------------------------------------------------------------------------- kernels


def bench_neighbors(data, case: Case, repeats: int) -> None:
    import numpy as np

    from matdx.kernels import neighbor_list

    cell, pos = data["cell"], data["frames"][0]
    runs: dict[str, Callable[[], Any]] = {
        "matdx (i<j, d, vec)": lambda: neighbor_list(pos, NEIGHBOR_CUTOFF, cell),
        "matdx (both directions)": lambda: neighbor_list(
            pos, NEIGHBOR_CUTOFF, cell, both_directions=True
        ),
    }
    nsgrid = optional("MDAnalysis.lib.nsgrid")
    if nsgrid is not None:
        dims = box_dimensions(cell)
        coords = pos.astype(np.float32)

        def run_mda():
            result = nsgrid.FastNS(NEIGHBOR_CUTOFF, coords, dims, pbc=True).self_search()
            return result.get_pairs(), result.get_pair_distances()

        runs["MDAnalysis nsgrid"] = run_mda
        case.baseline["MDAnalysis nsgrid"] = "matdx (i<j, d, vec)"
    freud = optional("freud")
    if freud is not None:
        box, points = freud_system(freud, cell, pos)

        def run_freud():
            query = freud.locality.AABBQuery(box, points)
            return query.query(
                points, {"r_max": NEIGHBOR_CUTOFF, "exclude_ii": True}
            ).toNeighborList()

        runs["freud AABBQuery"] = run_freud
        case.baseline["freud AABBQuery"] = "matdx (both directions)"
    ase_nl = optional("ase.neighborlist")
    if ase_nl is not None and case.n_atoms <= SLOW_PEER_MAX_ATOMS["ase_neighbors"]:
        from ase import Atoms

        atoms = Atoms(f"H{len(pos)}", positions=pos, cell=cell, pbc=True)
        runs["ASE neighbor_list"] = lambda: ase_nl.neighbor_list("d", atoms, NEIGHBOR_CUTOFF)
        case.baseline["ASE neighbor_list"] = "matdx (both directions)"
    results = measure(case, runs, repeats)

    half, both = results["matdx (i<j, d, vec)"], results["matdx (both directions)"]
    n = len(pos)
    our_keys = np.minimum(half.i, half.j) * n + np.maximum(half.i, half.j)
    order = np.argsort(our_keys)
    our_keys, our_d = our_keys[order], half.distance[order]
    inverse = np.linalg.inv(cell)

    def true_distance(keys):
        vec = pos[keys % n] - pos[keys // n]
        frac = vec @ inverse
        return np.linalg.norm((frac - np.round(frac)) @ cell, axis=1)

    def compare_pairs(name: str, i, j, d) -> None:
        """Match pairs by index. Float32 peers round coordinates by up to ~1e-5 Å in a
        100 Å box, so a pair may be on either side of the cutoff only if its exact
        distance is within ``band`` of it; common pairs must agree to ``band``."""
        band = 1e-4
        i, j, d = np.asarray(i), np.asarray(j), np.asarray(d, float)
        keep = i < j
        keys = i[keep].astype(np.int64) * n + j[keep]
        d = d[keep]
        where = np.clip(np.searchsorted(our_keys, keys), 0, len(our_keys) - 1)
        found = our_keys[where] == keys
        only_ours = np.setdiff1d(our_keys, keys[found], assume_unique=True)
        off = np.concatenate(
            [true_distance(keys[~found]), our_d[np.searchsorted(our_keys, only_ours)]]
        )
        worst = np.abs(off - NEIGHBOR_CUTOFF).max() if off.size else 0.0
        agree(
            case,
            f"{name}: {found.sum()} pairs in common, {(~found).sum()} only theirs, "
            f"{only_ours.size} only ours; exact distance of those from the cutoff",
            worst,
            band,
        )
        agree(
            case,
            f"{name} distances of common pairs (float32)",
            np.abs(d[found] - our_d[where[found]]).max(),
            band,
        )

    if "MDAnalysis nsgrid" in results:
        pairs, dist = results["MDAnalysis nsgrid"]
        pairs = np.sort(pairs, axis=1)
        compare_pairs("MDAnalysis", pairs[:, 0], pairs[:, 1], dist)
    if "freud AABBQuery" in results:
        nlist = results["freud AABBQuery"]
        compare_pairs("freud", nlist.query_point_indices, nlist.point_indices, nlist.distances)
    if "ASE neighbor_list" in results:
        d = results["ASE neighbor_list"]
        agree(case, "ASE distances", np.abs(np.sort(d) - np.sort(both.distance)).max(), 1e-10)


def bench_rdf(data, case: Case, repeats: int) -> None:
    import numpy as np

    from matdx.kernels import radial_distribution

    cell, frames, species = data["cell"], data["frames"], data["species"]
    # MDAnalysis and ASE take seconds per frame: they get the first few frames, and
    # matdx is timed again on the same frames for their ratios.
    few = frames[: max(1, SLOW_PEER_ATOM_FRAMES // case.n_atoms)]
    frames_label = f"{len(few)} frame{'s' if len(few) > 1 else ''}"
    subset = f"matdx, {frames_label}"
    runs: dict[str, Callable[[], Any]] = {
        "matdx": lambda: radial_distribution(frames, cell, RDF_R_MAX, RDF_BINS, species),
        subset: lambda: radial_distribution(few, cell, RDF_R_MAX, RDF_BINS, species),
    }
    freud = optional("freud")
    if freud is not None:
        systems = [freud_system(freud, cell, p) for p in frames]

        def run_freud():
            rdf = freud.density.RDF(bins=RDF_BINS, r_max=RDF_R_MAX)
            for system in systems:
                rdf.compute(system, reset=False)
            return rdf.rdf

        runs["freud density.RDF"] = run_freud
    mda = optional("MDAnalysis")
    mda_name = f"MDAnalysis InterRDF, {frames_label}"
    if mda is not None and case.n_atoms <= SLOW_PEER_MAX_ATOMS["mda_rdf"]:
        from MDAnalysis.analysis.rdf import InterRDF

        universe = mda_universe(mda, few, cell)
        runs[mda_name] = lambda: InterRDF(
            universe.atoms,
            universe.atoms,
            nbins=RDF_BINS,
            range=(0.0, RDF_R_MAX),
            exclusion_block=(1, 1),
        ).run()
        case.baseline[mda_name] = subset
    ase_rdf = optional("ase.geometry.rdf")
    ase_name = f"ASE get_rdf, {frames_label}"
    if ase_rdf is not None and case.n_atoms <= SLOW_PEER_MAX_ATOMS["ase_rdf"]:
        from ase import Atoms

        images = [Atoms(f"H{len(p)}", positions=p, cell=cell, pbc=True) for p in few]
        runs[ase_name] = lambda: ase_rdf.get_rdf(images, RDF_R_MAX, RDF_BINS)[0]
        case.baseline[ase_name] = subset
    results = measure(case, runs, repeats)

    if "freud density.RDF" in results:
        # freud's 'exact' mode normalises by N^2 (matdx's finite_size=False), in float32.
        ours = radial_distribution(frames, cell, RDF_R_MAX, RDF_BINS, finite_size=False)
        error = np.abs(results["freud density.RDF"] - ours.g).max()
        agree(case, "freud g(r) (float32)", error, 2e-3)
    if mda_name in results:
        # MDAnalysis normalises like pairs by N (N - 1), matdx's default.
        error = np.abs(results[mda_name].results.rdf - results[subset].g).max()
        agree(case, "MDAnalysis g(r) (float32)", error, 2e-3)
    if ase_name in results:
        ours = radial_distribution(few, cell, RDF_R_MAX, RDF_BINS, finite_size=False)
        agree(case, "ASE g(r)", np.abs(results[ase_name] - ours.g).max(), 1e-10)


def bench_msd(data, case: Case, repeats: int) -> None:
    import numpy as np

    from matdx.kernels import mean_squared_displacement

    walk, species = data["walk"], data["species"]
    runs: dict[str, Callable[[], Any]] = {
        "matdx": lambda: mean_squared_displacement(walk, TIMESTEP, species)
    }
    freud = optional("freud")
    if freud is not None:
        runs["freud msd.MSD(window)"] = lambda: freud.msd.MSD(mode="window").compute(walk).msd
    tidynamics = optional("tidynamics")
    if tidynamics is not None:
        runs["tidynamics msd"] = lambda: np.mean(
            [tidynamics.msd(walk[:, i]) for i in range(walk.shape[1])], axis=0
        )
    analyzer = optional("pymatgen.analysis.diffusion.analyzer")
    if analyzer is not None and case.n_atoms <= SLOW_PEER_MAX_ATOMS["pymatgen"]:
        from pymatgen.core import Lattice, Structure

        structure = Structure(
            Lattice(data["cell"]), list(species), walk[0], coords_are_cartesian=True
        )
        displacements = np.ascontiguousarray((walk - walk[0]).transpose(1, 0, 2))
        displacements[species != "Li"] = 0.0  # framework at rest: no drift correction
        # pymatgen starts fitting at 1000 / (time_step * step_skip) frames: 10 fs "steps"
        # put that at frame 50; only the lag index matters for the comparison.
        runs["pymatgen DiffusionAnalyzer"] = lambda: analyzer.DiffusionAnalyzer(
            structure, displacements, "Li", 300, time_step=1, step_skip=20
        )
    results = measure(case, runs, repeats)

    ours = results["matdx"]
    scale = ours.msd[1:].max()
    if "freud msd.MSD(window)" in results:
        # freud converts positions to float32 and does not centre them, so S1 and 2 S2
        # (each ~|r|²) cancel in single precision: compare relative to the mean |r|².
        error = np.abs(results["freud msd.MSD(window)"] - ours.msd).max()
        agree(case, "freud MSD (float32, relative to <|r|²>)", error / (3 * np.mean(walk**2)), 1e-4)
    if "tidynamics msd" in results:
        error = np.abs(results["tidynamics msd"] - ours.msd).max() / scale
        agree(case, "tidynamics MSD (relative)", error, 1e-8)
    if "pymatgen DiffusionAnalyzer" in results:
        result = results["pymatgen DiffusionAnalyzer"]
        lags = np.rint(np.asarray(result.dt) / 20).astype(int)
        li = ours.species_msd["Li"]
        error = np.abs(result.msd - li[lags]).max() / scale
        agree(case, "pymatgen Li MSD (relative)", error, 1e-8)


def bench_vacf(data, case: Case, repeats: int) -> None:
    import numpy as np

    from matdx.kernels import velocity_autocorrelation

    velocities = data["velocities"]
    runs: dict[str, Callable[[], Any]] = {
        "matdx": lambda: velocity_autocorrelation(velocities, TIMESTEP)
    }
    tidynamics = optional("tidynamics")
    if tidynamics is not None:
        runs["tidynamics acf"] = lambda: np.mean(
            [tidynamics.acf(velocities[:, i]) for i in range(velocities.shape[1])], axis=0
        )
    results = measure(case, runs, repeats)
    if "tidynamics acf" in results:
        ours = results["matdx"].vacf
        error = np.abs(results["tidynamics acf"] - ours).max() / ours[0]
        agree(case, "tidynamics VACF (relative)", error, 1e-10)


def bench_matdx_only(data, cases: list[Case], n_atoms: int, cell_kind: str, repeats: int) -> None:
    """Kernels with no peer here: timed for reference."""
    import numpy as np

    from matdx.kernels import (
        bond_angle_distribution,
        coordination_numbers,
        smeared_dos,
        static_structure_factor,
        vibrational_dos,
    )

    cell, frame = data["cell"], data["frames"][0]
    runs = {
        "coordination numbers": lambda: coordination_numbers(frame, NEIGHBOR_CUTOFF, cell),
        "bond angles (3.5 Å)": lambda: bond_angle_distribution(frame, 3.5, cell),
        "S(q) direct (q ≤ 2 Å⁻¹)": lambda: static_structure_factor(frame, cell, 2.0, 40),
    }
    rng = np.random.default_rng(n_atoms)
    eigenvalues = np.sort(rng.uniform(-10, 10, size=(2, 400, 64)), axis=-1)
    energies = np.linspace(-12, 12, 4001)
    runs["DOS (2x400x64 → 4001 E)"] = lambda: smeared_dos(eigenvalues, energies, sigma=0.05)
    vacf = np.exp(-np.arange(1000) * TIMESTEP / 50.0)
    runs["VDOS (1000 lags)"] = lambda: vibrational_dos(vacf, TIMESTEP)
    for name, fn in runs.items():
        case = Case(name, n_atoms, cell_kind)
        measure(case, {"matdx": fn}, repeats)
        cases.append(case)


# ----------------------------------------------------------------------------- compile cost


def first_calls() -> dict[str, list[float]]:
    """First and second call of every kernel on tiny inputs, s.

    The first call compiles (fresh cache) or loads the compiled code (warm cache); the
    second shows what the call itself costs.
    """
    import numpy as np

    rng = np.random.default_rng(0)
    cell = np.diag([12.0, 12.0, 12.0])
    pos = rng.random((3, 64, 3)) * 12.0
    eig = np.sort(rng.random((1, 4, 6)), axis=-1)
    out = {}
    start = time.perf_counter()
    import matdx.kernels as k

    for name in KERNEL_MODULES:  # imports numba; compiles nothing
        importlib.import_module(f"matdx.kernels.{name}")
    out["import numba + kernel modules"] = [time.perf_counter() - start, 0.0]
    calls: dict[str, Callable[[], Any]] = {}

    calls["neighbor_list"] = lambda: k.neighbor_list(pos[0], 3.0, cell)
    calls["radial_distribution"] = lambda: k.radial_distribution(pos, cell, 5.0, 10)
    calls["mean_squared_displacement"] = lambda: k.mean_squared_displacement(pos, 1.0)
    calls["velocity_autocorrelation"] = lambda: k.velocity_autocorrelation(pos, 1.0)
    calls["static_structure_factor"] = lambda: k.static_structure_factor(pos, cell, 2.0, 5)
    calls["bond_angle_distribution"] = lambda: k.bond_angle_distribution(pos, 3.0, cell)
    calls["smeared_dos (gaussian)"] = lambda: k.smeared_dos(eig, np.linspace(0, 1, 9))
    for name, fn in calls.items():
        out[name] = []
        for _ in range(2):
            start = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - start)
    return out


def compile_report(cache_dir: str) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    compiled = first_calls()
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    probe = subprocess.run(
        [sys.executable, __file__, "--compile-probe"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return compiled, json.loads(probe.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- report


def print_table(cases: list[Case]) -> None:
    print("\n## Median wall time (s) and peer / matdx ratio (> 1: matdx is faster)\n")
    print("| kernel | atoms | cell | implementation | median (s) | ratio |")
    print("|---|---:|---|---|---:|---:|")
    for case in cases:
        for variant, seconds in case.times.items():
            ratio = "" if variant.startswith("matdx") else f"{case.ratio(variant):.1f}×"
            print(
                f"| {case.kernel} | {case.n_atoms:,} | {case.cell} | {variant} | "
                f"{seconds:.4f} | {ratio} |"
            )


def print_targets(cases: list[Case]) -> None:
    print("\n## Targets at 10,000 atoms (ratio = peer time / matdx time, same run)\n")
    if not any(case.n_atoms == 10_000 for case in cases):
        print("- not measured: run with 10000 among --sizes")
    for kernel, ours, peer, required in TARGETS:
        for case in cases:
            if case.kernel != kernel or case.n_atoms != 10_000:
                continue
            if ours in case.times and peer in case.times:
                ratio = case.times[peer] / case.times[ours]  # the target's own pairing
                verdict = "MET" if ratio >= required else "NOT MET"
                print(
                    f"- {kernel} ({case.cell}): {ours} vs {peer}: {ratio:.1f}× "
                    f"(target ≥ {required:g}×) {verdict}"
                )
            else:
                print(f"- {kernel} ({case.cell}): {peer} not installed, target not measured")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_threads(args.threads)
    if args.compile_probe:
        print(json.dumps(first_calls()))
        return 0
    with tempfile.TemporaryDirectory(prefix="matdx-numba-") as cache_dir:
        if not args.warm_cache:
            os.environ["NUMBA_CACHE_DIR"] = cache_dir
        return run(args, cache_dir)


def run(args: argparse.Namespace, cache_dir: str) -> int:
    versions = {}
    for dist in ["numpy", "numba", *PEERS]:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"# matdx.kernels benchmark — {args.threads} threads, "
        f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, repeats {args.repeats}, "
        f"load average before start: {load}"
    )
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    start = time.perf_counter()

    # Before anything else imports numba, so the import is part of the first-call cost.
    compiled, cached = compile_report(cache_dir if not args.warm_cache else "")
    freud = optional("freud")
    if freud is not None:
        freud.parallel.set_num_threads(args.threads)
    fresh = "warm numba cache" if args.warm_cache else "fresh numba cache (compiles)"
    print(f"\n## First call on tiny inputs (s): {fresh}, then a new process loading it\n")
    print("| kernel | first call | from cache, new process | later calls |")
    print("|---|---:|---:|---:|")
    for name, (first, later) in compiled.items():
        steady = f"{later:.4f}" if later else ""
        print(f"| {name} | {first:.2f} | {cached[name][0]:.3f} | {steady} |")
    total_first = sum(v[0] for v in compiled.values())
    total_cached = sum(v[0] for v in cached.values())
    print(f"| total | {total_first:.2f} | {total_cached:.3f} | |")

    cases: list[Case] = []
    for n_atoms in args.sizes:
        for cell_kind in args.cells:
            data = make_data(n_atoms, cell_kind == "triclinic", seed=n_atoms)
            for kernel, bench in (
                ("neighbours", bench_neighbors),
                ("g(r)", bench_rdf),
                ("MSD", bench_msd),
                ("VACF", bench_vacf),
            ):
                if kernel in ("MSD", "VACF") and cell_kind != args.cells[0]:
                    continue  # unwrapped dynamics do not depend on the cell shape
                case = Case(kernel, n_atoms, cell_kind if kernel not in ("MSD", "VACF") else "-")
                bench(data, case, args.repeats)
                cases.append(case)
                for line in case.agreement:
                    print(f"[{n_atoms:,} {case.cell} {kernel}] agreement: {line}")
                sys.stdout.flush()
            bench_matdx_only(data, cases, n_atoms, cell_kind, args.repeats)
            del data

    print_table(cases)
    print_targets(cases)
    mismatches = [line for case in cases for line in case.agreement if "MISMATCH" in line]
    print(
        f"\nagreement checks: {sum(len(c.agreement) for c in cases)} run, "
        f"{len(mismatches)} mismatched; total time {time.perf_counter() - start:.0f} s"
    )
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
