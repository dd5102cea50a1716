"""What a code run produced, in matdx units, and helpers shared by the parsers.

Units everywhere: energies in eV, lengths in Å, forces in eV/Å, stress in eV/Å³, time in fs,
temperature in K, magnetic moments in Bohr magnetons (μB). Each parser converts on read with
the named constants of :mod:`ase.units` (``Ry``, ``Hartree``, ``Bohr``, ``GPa``, ``bar``).

Stress sign convention (ASE's): σ = (1/V) ∂E/∂ε, so a cell under **compression** has a
**negative** stress (it would lower its energy by expanding) and a cell under tension a positive
one. Quantum ESPRESSO, VASP, CP2K and LAMMPS print the opposite sign (pressure-like, positive
under compression); the parsers flip it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from matdx.codes.trajectory import Frames

__all__ = [
    "CalculationResult",
    "atoms_from_dict",
    "atoms_to_dict",
    "file_sha256",
    "frames_from_dict",
    "frames_to_dict",
]


def file_sha256(path: str | Path) -> str:
    """SHA-256 hex digest of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atoms_to_dict(atoms: Atoms) -> dict[str, Any]:
    """Plain JSON values for a structure.

    Returns
    -------
    dict
        ``numbers`` (n_atoms,), ``symbols``, ``positions`` (n_atoms, 3) Å, ``cell`` (3, 3) Å
        (lattice vectors as rows), ``pbc`` (3,), and ``initial_magnetic_moments`` (n_atoms,) μB
        when any is non-zero.
    """
    data: dict[str, Any] = {
        "numbers": [int(z) for z in atoms.numbers],
        "symbols": atoms.get_chemical_symbols(),
        "positions": np.asarray(atoms.positions, dtype=float).tolist(),
        "cell": np.asarray(atoms.cell.array, dtype=float).tolist(),
        "pbc": [bool(p) for p in atoms.pbc],
    }
    moments = atoms.get_initial_magnetic_moments()
    if np.any(moments != 0):
        data["initial_magnetic_moments"] = np.asarray(moments, dtype=float).tolist()
    return data


def atoms_from_dict(data: dict[str, Any]) -> Atoms:
    """Inverse of :func:`atoms_to_dict`."""
    atoms = Atoms(
        numbers=data["numbers"], positions=data["positions"], cell=data["cell"], pbc=data["pbc"]
    )
    if "initial_magnetic_moments" in data:
        atoms.set_initial_magnetic_moments(data["initial_magnetic_moments"])
    return atoms


def frames_to_dict(frames: Frames) -> dict[str, Any]:
    """Plain JSON values for a block of frames (see :class:`~matdx.codes.trajectory.Frames`)."""

    def plain(value: np.ndarray | None) -> Any:
        return None if value is None else np.asarray(value).tolist()

    return {
        "positions": plain(frames.positions),
        "cells": plain(frames.cells),
        "times": plain(frames.times),
        "steps": plain(frames.steps),
        "velocities": plain(frames.velocities),
        "forces": plain(frames.forces),
        "observables": {name: plain(value) for name, value in frames.observables.items()},
    }


def frames_from_dict(data: dict[str, Any]) -> Frames:
    """Inverse of :func:`frames_to_dict`."""

    def array(value: Any, dtype: type = float) -> np.ndarray | None:
        return None if value is None else np.asarray(value, dtype=dtype)

    return Frames(
        positions=np.asarray(data["positions"], dtype=float),
        cells=np.asarray(data["cells"], dtype=float),
        times=np.asarray(data["times"], dtype=float),
        steps=np.asarray(data["steps"], dtype=np.int64),
        velocities=array(data.get("velocities")),
        forces=array(data.get("forces")),
        observables={k: np.asarray(v, dtype=float) for k, v in data["observables"].items()},
    )


def _plain(value: Any) -> Any:
    """Recursively turn numpy arrays and scalars into lists, floats and ints."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@dataclass
class CalculationResult:
    """Everything one code run produced, converted to eV, Å, fs, K and μB.

    Attributes
    ----------
    code : str
        Template name: ``"espresso"``, ``"lammps"``, ``"vasp"``, ``"cp2k"``.
    code_version : str or None
        As printed by the program, e.g. ``"6.7MaX"`` for ``Program PWSCF v.6.7MaX``.
    calculation : str
        ``"static"``, ``"relax"``, ``"vc-relax"``, ``"nscf"``, ``"bands"`` or ``"md"``.
    structure : ase.Atoms
        Final structure (last ionic step, last MD frame; the input structure for a static run).
    converged : bool
        True when every convergence criterion that applies was met and the program finished.
    scf_converged : bool or None
        Electronic self-consistency of the final step; None for codes without an SCF loop.
    ionic_converged : bool or None
        Relaxations: the force/stress criteria were met before the step limit; None otherwise.
    energy : float or None
        Total energy of the final step, eV. With smearing this is the free energy (E − TS),
        the quantity whose derivatives are the forces.
    forces : (n_atoms, 3) ndarray or None
        eV/Å, final step.
    stress : (3, 3) ndarray or None
        eV/Å³ in ASE's sign convention: σ = (1/V) ∂E/∂ε, negative under compression,
        positive under tension (QE, VASP, CP2K and LAMMPS print the opposite sign).
    fermi_level : float or None
        eV; the highest occupied level for fixed occupations.
    band_gap : float or None
        eV, by matdx's one band-gap rule (:mod:`matdx.codes.bandgap`); 0.0 for metals; None
        when no unoccupied states were computed.
    eigenvalues : (n_spins, n_kpoints, n_bands) ndarray or None
        Kohn–Sham eigenvalues, eV.
    occupations : (n_spins, n_kpoints, n_bands) ndarray or None
        Occupation numbers, normalised to 1 per state (per spin channel).
    kpoints : (n_kpoints, 3) ndarray or None
        In fractional coordinates of the reciprocal lattice.
    kweights : (n_kpoints,) ndarray or None
        Normalised to sum to 1.
    magnetic_moments : (n_atoms,) ndarray or None
        Site-projected moments, μB.
    total_magnetization : float or None
        μB per cell.
    n_scf_steps : int or None
        Total number of electronic iterations over all ionic steps.
    n_ionic_steps : int or None
        Number of energy evaluations (ionic steps, MD frames printed, minimiser iterations).
    walltime_s : float or None
        Wall time of the program, s.
    pseudopotentials : list of dict
        ``{"element", "name", "sha256"}`` per element: the file name and the SHA-256 of its
        bytes (never the file). ``sha256`` is None when the file is not available (VASP run with
        ``POTCAR.spec``: ``name`` is the POTCAR TITEL).
    parameters : dict
        The complete code parameters as written into the input files (defaults included).
    warnings : list of str
        Warnings the program printed that the user should know about.
    frames : Frames or None
        Per-step frames of a relaxation (positions Å, cells Å, forces eV/Å, observables
        ``potential_energy`` eV); ``times`` holds the step index for relaxations.
    trajectory : str or None
        Path of the H5MD trajectory file (MD runs, LAMMPS relaxations), relative to the run
        directory, written with :class:`~matdx.codes.trajectory.TrajectoryWriter`.
    """

    code: str
    calculation: str
    structure: Atoms
    converged: bool
    code_version: str | None = None
    scf_converged: bool | None = None
    ionic_converged: bool | None = None
    energy: float | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    fermi_level: float | None = None
    band_gap: float | None = None
    eigenvalues: np.ndarray | None = None
    occupations: np.ndarray | None = None
    kpoints: np.ndarray | None = None
    kweights: np.ndarray | None = None
    magnetic_moments: np.ndarray | None = None
    total_magnetization: float | None = None
    n_scf_steps: int | None = None
    n_ionic_steps: int | None = None
    walltime_s: float | None = None
    pseudopotentials: list[dict[str, Any]] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    frames: Frames | None = None
    trajectory: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly plain values (lists, floats, ints, str, None) keyed like the attributes.

        ``structure`` becomes :func:`atoms_to_dict`, ``frames`` :func:`frames_to_dict`; the
        units are those of the attributes (eV, Å, eV/Å, eV/Å³ in ASE's sign convention).
        """
        data: dict[str, Any] = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "structure":
                data[item.name] = atoms_to_dict(value)
            elif item.name == "frames":
                data[item.name] = None if value is None else frames_to_dict(value)
            else:
                data[item.name] = _plain(value)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CalculationResult:
        """Rebuild a result from :meth:`to_dict` output (arrays become numpy arrays)."""
        arrays = {
            "forces", "stress", "eigenvalues", "occupations", "kpoints", "kweights",
            "magnetic_moments",
        }
        kwargs: dict[str, Any] = {}
        for item in fields(cls):
            if item.name not in data:
                continue
            value = data[item.name]
            if item.name == "structure":
                value = atoms_from_dict(value)
            elif item.name == "frames":
                value = None if value is None else frames_from_dict(value)
            elif item.name in arrays and value is not None:
                value = np.asarray(value, dtype=float)
            kwargs[item.name] = value
        return cls(**kwargs)
