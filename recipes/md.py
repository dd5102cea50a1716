"""Molecular dynamics (NVT) and the analysis of its trajectory.

The flow is ``md → analyze``: the MD job writes every ``sample_every``-th frame to an H5MD
trajectory artifact (positions unwrapped, velocities in Å/fs, forces in eV/Å, potential and
kinetic energy in eV, temperature in K); the analysis job reads it back and computes, with the
numba kernels of :mod:`matdx.kernels`, the radial distribution function g(r), the mean squared
displacement over all time origins and the self-diffusion coefficient from its linear regime.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from ase import Atoms, units
from ase.constraints import FixCom
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from pydantic import Field, PositiveFloat, PositiveInt

from matdx.codes.registry import code_info
from matdx.codes.trajectory import MEDIA_TYPE, TrajectoryReader, TrajectoryWriter
from matdx.recipes.analysis import analyze
from matdx.recipes.calculation import run_program
from matdx.recipes.calculators import calculator, method
from matdx.recipes.maker import CodeMaker
from matdx.workflows import ArtifactFile, Flow, job

__all__ = ["MDMaker", "md"]


@job
def md(
    *,
    atoms: Atoms,
    code: str = "emt",
    parameters: dict[str, Any] | None = None,
    protocol: str = "moderate",
    applied: dict[str, int] | None = None,
    temperature_K: float = 300.0,
    timestep_fs: float = 2.0,
    steps: int = 1000,
    friction_per_fs: float = 0.01,
    sample_every: int = 10,
    seed: int = 0,
    premelt_temperature_K: float | None = None,
    premelt_steps: int = 0,
) -> dict[str, Any]:
    """NVT molecular dynamics (Langevin with in-process codes; the program's thermostat,
    Nosé–Hoover by default, with LAMMPS).

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
    if not code_info(code).in_process:
        return _md_program(
            atoms,
            code,
            parameters,
            protocol,
            applied,
            temperature_K,
            timestep_fs,
            steps,
            sample_every,
            seed,
        )
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


def _md_program(
    atoms: Atoms,
    code: str,
    parameters: dict[str, Any] | None,
    protocol: str,
    applied: dict[str, int] | None,
    temperature_K: float,
    timestep_fs: float,
    steps: int,
    sample_every: int,
    seed: int,
) -> dict[str, Any]:
    """NVT MD run by a program (LAMMPS); its trajectory becomes the H5MD artifact."""
    settings = {
        "ensemble": "nvt",
        "temperature": temperature_K,
        "timestep": timestep_fs,
        "steps": steps,
        "dump_every": sample_every,
        "seed": seed or 4928459,
    }
    clashes = sorted(set(settings) & set(parameters or {}))
    if clashes:
        raise ValueError(
            f"parameters: {', '.join(clashes)} set twice; use the md recipe's own settings "
            "(temperature_K, timestep_fs, steps, sample_every, seed)"
        )
    output = run_program(
        atoms, code, "md", {**settings, **(parameters or {})}, protocol=protocol, applied=applied
    )
    if "trajectory" not in output:
        raise RuntimeError(f"{code} md wrote no trajectory (dump_every={sample_every})")
    with TrajectoryReader(output["trajectory"].path) as reader:
        temperatures = reader.read().observables.get("temperature", np.array([]))
    second_half = temperatures[len(temperatures) // 2 :]
    output["temperature_mean_K"] = float(np.mean(second_half)) if len(second_half) else None
    output["md"] = {
        "ensemble": "NVT",
        "thermostat": str((parameters or {}).get("thermostat", "nose-hoover")),
        "duration_fs": steps * timestep_fs,
        "timestep_fs": timestep_fs,
        "temperature_K": temperature_K,
        "n_frames": len(temperatures),
        "seed": seed,
    }
    return output


class MDMaker(CodeMaker):
    """NVT molecular dynamics of each structure, then g(r), MSD and diffusion coefficient."""

    name: ClassVar[str] = "md"
    description: ClassVar[str] = "NVT MD followed by g(r), MSD and D"
    summary: ClassVar[tuple[str, ...]] = ("temperature_K", "diffusion", "first_peak_A")
    returns_structure: ClassVar[bool] = False  # the output is the trajectory's analysis

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
    equilibration_fraction: float | None = Field(
        None, ge=0, lt=0.9, description="leading fraction of frames left out; default: the "
        "frames before the potential energy and temperature are steady"
    )

    def check(self, atoms: Atoms, *, local: bool = True) -> None:
        super().check(atoms, local=local)
        if self.steps // self.sample_every < 10:
            raise ValueError("steps: fewer than 10 frames would be written; lower sample_every")
        if self.premelt_steps and not code_info(self.code).in_process:
            raise ValueError(
                f"premelt_steps: not available with {self.code}; melt in a "
                "separate study and start from its structure"
            )

    def make(self, atoms: Atoms, start: Any = None) -> Flow:
        dynamics = md(
            atoms=atoms if start is None else start,
            **self.code_settings(),
            temperature_K=self.temperature_K,
            timestep_fs=self.timestep_fs,
            steps=self.steps,
            friction_per_fs=self.friction_per_fs,
            sample_every=self.sample_every,
            seed=self.seed,
            premelt_temperature_K=self.premelt_temperature_K,
            premelt_steps=self.premelt_steps,
        )
        analysis = analyze(
            dynamics.output["trajectory"], self.temperature_K, self.equilibration_fraction,
            method=dynamics.output["method"], md=dynamics.output["md"],
            structure=dynamics.output["structure"],
        )
        return Flow(
            [dynamics, analysis],
            output=analysis.output,
            name=f"md {atoms.get_chemical_formula()} {self.temperature_K:g} K",
        )
