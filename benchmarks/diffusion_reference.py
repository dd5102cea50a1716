"""Reference diffusion coefficient of liquid Cu with ASE's EMT potential, from a long seeded run.

Runs the md recipe's job and its analysis in this process (no store) on the demo's liquid:
256 Cu atoms (4×4×4 cubic fcc cells) near the liquid's own density at 2000 K (lattice
parameter 3.92 Å, 15.06 Å³/atom, where EMT's pressure is about 2 GPa; at the crystal's 3.61 Å
the "liquid" is at 19 GPa, below its melting line, and its mobility comes and goes), Langevin
NVT, 4 fs steps, a frame every 10 steps, melted at 4000 K for 250 steps first. It prints the
estimate of :mod:`matdx.kernels.diffusion` for the whole run and, as a check of the error
bar, the same estimate on consecutive blocks of the demo's length (600 steps); with
``--output`` it writes all of it as JSON, with the mean pressure (GPa) and drift checks.
The committed ``benchmarks/diffusion_reference.json`` is the output of::

    python benchmarks/diffusion_reference.py --temperature 2000 --steps 2500 --seed 7 \\
        --output benchmarks/diffusion_reference.json

``tests/recipes/test_diffusion.py`` runs the demo-length version (600 steps) of the same
function with another seed and checks it against that file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.units import GPa, kB

from matdx.codes.trajectory import TrajectoryReader
from matdx.kernels.diffusion import estimate_diffusion
from matdx.kernels.equilibration import equilibration_start
from matdx.kernels.msd import mean_squared_displacement
from matdx.recipes.analysis import analyze
from matdx.recipes.md import md
from matdx.workflows import ArtifactFile

#: Lattice parameter (Å) of the demo's liquid: EMT's pressure at 2000 K is about 2 GPa there
#: (19 GPa at the crystal's 3.61 Å).
LIQUID_LATTICE_A = 3.92
#: Frames of a demo-length run (600 steps, a frame every 10, the start included).
DEMO_FRAMES = 61


def mean_pressure(trajectory: Path, temperature_K: float, every: int = 10) -> float:
    """Mean pressure (GPa) of every ``every``-th frame: EMT virial plus the ideal-gas term at
    the thermostat's temperature."""
    values = []
    with TrajectoryReader(trajectory) as reader:
        frames = reader.read()
        numbers = reader.numbers
    for k in range(0, len(frames.times), every):
        atoms = Atoms(numbers=numbers, positions=frames.positions[k], cell=frames.cells[k],
                      pbc=True)
        atoms.calc = EMT()
        virial = -float(np.mean(atoms.get_stress(include_ideal_gas=False)[:3]))
        values.append((virial + len(atoms) * kB * temperature_K / atoms.get_volume()) / GPa)
    return float(np.mean(values))


def demo_length_blocks(trajectory: Path) -> list[float]:
    """D (cm²/s) of consecutive demo-length blocks of the run, each analysed as the demo's
    run is (equilibration detected, default fit window); None where none is detected."""
    with TrajectoryReader(trajectory) as reader:
        frames = reader.read()
        pbc = reader.pbc
    values = []
    for first in range(0, len(frames.times) - DEMO_FRAMES + 1, DEMO_FRAMES - 1):
        block = slice(first, first + DEMO_FRAMES)
        skip = max(equilibration_start(frames.observables[name][block]).index
                   for name in ("potential_energy", "temperature"))
        kept = slice(first + skip, first + DEMO_FRAMES)
        dt = float(frames.times[1] - frames.times[0])
        msd = mean_squared_displacement(frames.positions[kept], dt, cell=frames.cells[kept],
                                        pbc=pbc)
        estimate = estimate_diffusion(msd.time, msd.msd, frames.positions.shape[1])
        values.append(estimate.in_cm2_per_s()[0] if estimate.detected else None)
    return values


def run(temperature_K: float, steps: int, seed: int, premelt: bool | None = None,
        keep: Path | None = None, blocks: bool = False) -> dict[str, Any]:
    """MD of 256 Cu atoms at ``temperature_K`` and its MSD analysis; returns the analysis.

    ``premelt`` (default: above 1500 K) melts the crystal at 4000 K for 250 steps first, at
    the liquid's density (:data:`LIQUID_LATTICE_A`); below 1500 K the crystal keeps its 0 K
    lattice parameter. ``keep`` names a file to copy the H5MD trajectory to; ``blocks`` adds
    the pressure and the demo-length blocks' D.
    """
    melt = temperature_K > 1500 if premelt is None else premelt
    lattice = {"a": LIQUID_LATTICE_A} if melt else {}
    atoms = bulk("Cu", cubic=True, **lattice).repeat((4, 4, 4))
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as work:
        os.chdir(work)
        try:
            out = md.original(atoms=atoms, code="emt", temperature_K=temperature_K,
                              timestep_fs=4.0, steps=steps, sample_every=10, seed=seed,
                              premelt_temperature_K=4000.0 if melt else None,
                              premelt_steps=250 if melt else 0)
            trajectory = ArtifactFile(Path(work) / "md.h5")
            result = analyze.original(trajectory, temperature_K, kernels=["msd"])
            extra: dict[str, Any] = {}
            if blocks:
                extra["pressure_GPa"] = mean_pressure(trajectory.path, temperature_K)
                values = demo_length_blocks(trajectory.path)
                found = [v for v in values if v is not None]
                extra["demo_length_blocks"] = {
                    "D_cm2_per_s": values,
                    "mean": float(np.mean(found)) if found else None,
                    "spread": float(np.std(found, ddof=1)) if len(found) > 1 else None,
                }
            if keep is not None:
                shutil.copyfile(trajectory.path, keep)
        finally:
            os.chdir(here)
    keys = ("diffusion", "diffusion_detected", "D_cm2_per_s", "D_cm2_per_s_err",
            "D_upper_cm2_per_s", "D_fit_cm2_per_s", "fit_window_fs", "ballistic_end_fs",
            "msd_exponent", "frames_analysed", "equilibration", "equilibration_fs", "warnings")
    cell = np.asarray(out["structure"].cell.array)
    return {"temperature_K": temperature_K, "steps": steps, "seed": seed,
            "volume_A3_per_atom": float(abs(np.linalg.det(cell))) / len(atoms),
            "temperature_mean_K": out["temperature_mean_K"], **{k: result[k] for k in keys},
            **extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--temperature", type=float, default=2000.0, help="K")
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--keep", type=Path, help="copy the H5MD trajectory to this file")
    args = parser.parse_args()
    start = time.perf_counter()
    result = run(args.temperature, args.steps, args.seed, keep=args.keep, blocks=True)
    result["command"] = (f"python benchmarks/diffusion_reference.py --temperature "
                         f"{args.temperature:g} --steps {args.steps} --seed {args.seed}")
    print(json.dumps(result, indent=2))
    print(f"{time.perf_counter() - start:.0f} s")
    if args.output:
        args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
