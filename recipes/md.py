"""Molecular dynamics (Langevin NVT) and the analysis of its trajectory.

The flow is ``md → analyze``: the MD job writes every ``sample_every``-th frame to an H5MD
trajectory artifact (positions unwrapped, velocities in Å/fs, forces in eV/Å, potential and
kinetic energy in eV, temperature in K); the analysis job reads it back and computes the radial
distribution function g(r), the mean squared displacement over all time origins and the
self-diffusion coefficient from its linear regime.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from ase import Atoms, units
from ase.constraints import FixCom
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from pydantic import Field, PositiveFloat, PositiveInt

from matdx.codes.trajectory import MEDIA_TYPE, TrajectoryReader, TrajectoryWriter
from matdx.recipes.calculators import calculator, check_code, method
from matdx.workflows import ArtifactFile, Flow, job
from matdx.workflows.maker import Maker

__all__ = [
    "MDMaker",
    "analyze",
    "diffusion_coefficient",
    "md",
    "mean_squared_displacement",
    "radial_distribution",
]

A2_PER_FS_TO_CM2_PER_S = 0.1  # 1 Å²/fs = 1e-16 cm² / 1e-15 s


@job
def md(
    atoms: Atoms,
    code: str = "emt",
    parameters: dict[str, Any] | None = None,
    temperature_K: float = 300.0,
    timestep_fs: float = 2.0,
    steps: int = 1000,
    friction_per_fs: float = 0.01,
    sample_every: int = 10,
    seed: int = 0,
    premelt_temperature_K: float | None = None,
    premelt_steps: int = 0,
) -> dict[str, Any]:
    """Langevin NVT molecular dynamics.

    Parameters
    ----------
    temperature_K
        Thermostat temperature, K; velocities start from a Maxwell–Boltzmann distribution at
        this temperature (seeded), with no centre-of-mass motion.
    timestep_fs, steps
        Time step (fs) and number of steps.
    friction_per_fs
        Langevin friction coefficient, 1/fs.
    sample_every
        Write a frame every this many steps (the first frame is the start).
    premelt_temperature_K, premelt_steps
        Run this many unrecorded steps at this temperature first, e.g. to melt a crystal
        before sampling a liquid below the crystal's superheating limit.

    Returns
    -------
    dict
        ``trajectory`` (H5MD artifact), the final ``structure`` and its ``energy`` (eV), and
        ``md`` with duration_fs, timestep_fs, temperature_K (target) and n_frames, plus the
        mean temperature (K) over the second half of the run.
    """
    atoms = atoms.copy()
    atoms.calc = calculator(code, parameters)
    atoms.set_constraint(FixCom())
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, temperature_K, rng=rng)
    Stationary(atoms)
    if premelt_temperature_K is not None and premelt_steps > 0:
        Langevin(
            atoms,
            timestep=timestep_fs * units.fs,
            temperature_K=premelt_temperature_K,
            friction=friction_per_fs / units.fs,
            fixcm=False,
            rng=rng,
        ).run(premelt_steps)
    dynamics = Langevin(
        atoms,
        timestep=timestep_fs * units.fs,
        temperature_K=temperature_K,
        friction=friction_per_fs / units.fs,
        fixcm=False,
        rng=rng,
        logfile="md.log",
        loginterval=sample_every,
    )
    temperatures: list[float] = []
    with TrajectoryWriter(
        "md.h5",
        atoms.numbers,
        atoms.pbc,
        velocities=True,
        forces=True,
        observables=["potential_energy", "kinetic_energy", "temperature"],
    ) as frames:

        def sample() -> None:
            temperature = float(atoms.get_temperature())
            temperatures.append(temperature)
            frames.append(
                atoms.get_positions(),
                atoms.cell.array,
                time=dynamics.nsteps * timestep_fs,
                step=dynamics.nsteps,
                velocities=atoms.get_velocities() * units.fs,
                forces=atoms.get_forces(),
                potential_energy=atoms.get_potential_energy(),
                kinetic_energy=atoms.get_kinetic_energy(),
                temperature=temperature,
            )

        dynamics.attach(sample, interval=sample_every)
        dynamics.run(steps)
        n_frames = frames.n_frames
    energy = float(atoms.get_potential_energy())
    atoms.calc = None
    atoms.set_constraint()
    return {
        "trajectory": ArtifactFile("md.h5", media_type=MEDIA_TYPE),
        "structure": atoms,
        "energy": energy,
        "temperature_mean_K": float(np.mean(temperatures[len(temperatures) // 2 :])),
        "md": {
            "ensemble": "NVT",
            "thermostat": "Langevin",
            "duration_fs": steps * timestep_fs,
            "timestep_fs": timestep_fs,
            "temperature_K": temperature_K,
            "friction_per_fs": friction_per_fs,
            "n_frames": n_frames,
            "seed": seed,
            "premelt_temperature_K": premelt_temperature_K,
            "premelt_steps": premelt_steps,
        },
        "method": method(code, "md", parameters),
    }


def _half_width(cell: np.ndarray) -> float:
    """Half the smallest distance between opposite faces of a cell (Å): the largest radius
    the minimum image convention handles."""
    normals = np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]])
    return 0.5 * abs(np.linalg.det(cell)) / np.linalg.norm(normals, axis=1).max()


def radial_distribution(
    positions: np.ndarray, cells: np.ndarray, r_max: float, bins: int
) -> tuple[np.ndarray, np.ndarray]:
    """Total g(r) averaged over frames, minimum image convention.

    Parameters
    ----------
    positions : (n_frames, n_atoms, 3) Å
    cells : (n_frames, 3, 3) Å, rows are lattice vectors
    r_max : Å, at most half the smallest perpendicular cell width
    bins : number of histogram bins

    Returns
    -------
    r : (bins,) bin centres, Å
    g : (bins,) g(r), normalised so that an ideal gas gives 1
    """
    n_frames, n_atoms, _ = positions.shape
    edges = np.linspace(0.0, r_max, bins + 1)
    counts = np.zeros(bins)
    density = 0.0
    upper = np.triu_indices(n_atoms, k=1)
    for frame, cell in zip(positions, cells, strict=True):
        volume = abs(np.linalg.det(cell))
        if r_max > _half_width(cell) + 1e-12:
            raise ValueError(
                f"r_max: {r_max} Å exceeds half the cell width {_half_width(cell):.3f} Å"
            )
        fractional = frame @ np.linalg.inv(cell)
        delta = fractional[:, None, :] - fractional[None, :, :]
        delta -= np.round(delta)
        distances = np.linalg.norm(delta[upper] @ cell, axis=1)
        counts += np.histogram(distances, bins=edges)[0]
        density += n_atoms / volume
    density /= n_frames
    shells = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    g = 2.0 * counts / (n_frames * n_atoms * density * shells)
    return 0.5 * (edges[1:] + edges[:-1]), g


def mean_squared_displacement(positions: np.ndarray) -> np.ndarray:
    """MSD over all time origins (Å²) of unwrapped ``positions`` (n_frames, n_atoms, 3), Å.

    MSD(m) = S1(m) − 2 S2(m), with S2 the position autocorrelation computed by FFT.
    """
    n = positions.shape[0]
    squared = np.sum(positions**2, axis=2)  # (n_frames, n_atoms)
    padded = np.fft.rfft(positions, n=2 * n, axis=0)
    autocorrelation = np.fft.irfft(padded * padded.conj(), axis=0)[:n].sum(axis=2)
    autocorrelation /= (n - np.arange(n))[:, None]
    total = 2.0 * squared.sum(axis=0)
    s1 = np.empty((n, positions.shape[1]))
    for m in range(n):
        s1[m] = total / (n - m)
        total = total - squared[m] - squared[n - m - 1]
    return np.mean(s1 - 2.0 * autocorrelation, axis=1)


def diffusion_coefficient(
    times: np.ndarray, msd: np.ndarray, start: float = 0.2, stop: float = 0.6
) -> tuple[float, float]:
    """Self-diffusion coefficient D = slope / 6 (Å²/fs) and its uncertainty.

    The slope is fitted between ``start`` and ``stop`` (fractions of the longest lag), where
    MSD(t) is linear and still averaged over many origins. The uncertainty is half the
    difference between the slopes of the window's two halves.
    """
    lo, hi = int(start * len(times)), max(int(stop * len(times)), int(start * len(times)) + 4)
    window = slice(lo, hi)
    slope = np.polyfit(times[window], msd[window], 1)[0]
    middle = (lo + hi) // 2
    first = np.polyfit(times[lo : middle + 1], msd[lo : middle + 1], 1)[0]
    second = np.polyfit(times[middle:hi], msd[middle:hi], 1)[0]
    return float(slope / 6.0), float(abs(second - first) / 12.0)


@job
def analyze(
    trajectory: ArtifactFile,
    temperature_K: float,
    equilibration_fraction: float = 0.2,
    r_max: float = 6.0,
    bins: int = 150,
) -> dict[str, Any]:
    """g(r), MSD and diffusion coefficient of an MD trajectory.

    Parameters
    ----------
    equilibration_fraction
        Leading fraction of the frames left out as equilibration.
    r_max, bins
        Range (Å) and bins of g(r).

    Returns
    -------
    dict
        ``r`` (Å) and ``g_r``; ``time_fs`` and ``msd_A2``; ``D_A2_per_fs``,
        ``D_cm2_per_s`` with ``D_cm2_per_s_err``; ``first_peak_A``.
    """
    with TrajectoryReader(trajectory.path) as reader:
        frames = reader.read()
    skip = int(equilibration_fraction * len(frames.times))
    positions, cells, times = frames.positions[skip:], frames.cells[skip:], frames.times[skip:]
    r_max = min(r_max, min(_half_width(cell) for cell in cells))
    r, g = radial_distribution(positions, cells, r_max, bins)
    msd = mean_squared_displacement(positions)
    lag = times - times[0]
    d, d_err = diffusion_coefficient(lag, msd)
    return {
        "temperature_K": temperature_K,
        "r": r,
        "g_r": g,
        "first_peak_A": float(r[np.argmax(g)]),
        "time_fs": lag,
        "msd_A2": msd,
        "D_A2_per_fs": d,
        "D_cm2_per_s": d * A2_PER_FS_TO_CM2_PER_S,
        "D_cm2_per_s_err": d_err * A2_PER_FS_TO_CM2_PER_S,
        "frames_analysed": len(times),
        "method": {
            "calculation": "md-analysis",
            "parameters": {
                "equilibration_fraction": equilibration_fraction,
                "r_max": r_max,
                "bins": bins,
            },
        },
    }


class MDMaker(Maker):
    """NVT molecular dynamics of each structure, then g(r), MSD and diffusion coefficient."""

    name: ClassVar[str] = "md"
    description: ClassVar[str] = "Langevin NVT MD followed by g(r), MSD and D"
    summary: ClassVar[tuple[str, ...]] = (
        "temperature_K",
        "D_cm2_per_s",
        "D_cm2_per_s_err",
        "first_peak_A",
    )

    code: str = "emt"
    parameters: dict[str, Any] = Field(default_factory=dict)
    temperature_K: PositiveFloat = Field(300.0, description="thermostat temperature, K")
    timestep_fs: PositiveFloat = Field(2.0, le=10.0, description="time step, fs")
    steps: PositiveInt = 1000
    friction_per_fs: PositiveFloat = Field(0.01, description="Langevin friction, 1/fs")
    sample_every: PositiveInt = 10
    seed: int = 0
    premelt_temperature_K: PositiveFloat | None = Field(
        None, description="run premelt_steps at this temperature (K) before sampling"
    )
    premelt_steps: int = Field(0, ge=0)
    equilibration_fraction: float = Field(0.2, ge=0, lt=0.9)

    def check(self, atoms: Atoms) -> None:
        check_code(self.code, "md", atoms.get_chemical_symbols())
        if self.steps // self.sample_every < 10:
            raise ValueError("steps: fewer than 10 frames would be written; lower sample_every")

    def make(self, atoms: Atoms) -> Flow:
        dynamics = md(
            atoms,
            self.code,
            self.parameters,
            self.temperature_K,
            self.timestep_fs,
            self.steps,
            self.friction_per_fs,
            self.sample_every,
            self.seed,
            self.premelt_temperature_K,
            self.premelt_steps,
        )
        analysis = analyze(
            dynamics.output["trajectory"], self.temperature_K, self.equilibration_fraction
        )
        return Flow(
            [dynamics, analysis],
            output=analysis.output,
            name=f"md {atoms.get_chemical_formula()} {self.temperature_K:g} K",
        )
