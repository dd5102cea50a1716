"""LAMMPS recovery beyond lost atoms: out-of-range atoms, missing bond atoms, non-finite
thermodynamics and neighbour-list overflow.

=======================  ==========  ============================================================
handler                  kind        LAMMPS says (``log.lammps``)
=======================  ==========  ============================================================
``lost_atoms``           numerical   ERROR: Lost atoms (in :mod:`matdx.codes.lammps`)
``out_of_range_atoms``   numerical   ERROR: Out of range atoms - cannot compute PPPM/MSM
``bond_atoms_missing``   numerical   ERROR: Bond atoms N M missing (also Angle/Dihedral/Improper)
``non_finite_thermo``    numerical   nan/inf in a thermo column, or ERROR: Non-numeric atom coords
                                     / pressure
``neighbor_overflow``    input       ERROR: Neighbor list overflow, boost neigh_modify one
=======================  ==========  ============================================================

The first three and non-finite thermodynamics in MD are unstable integration: atoms moved too
far in one step. Their remedy halves the timestep (down to 0.1 fs); in a minimisation no
parameter fixes them (the structure or the potential is wrong). A neighbour-list overflow in a
run with a large ``neighbor_skin`` is the skin: halve it (at least 1 Å); with a skin of 1 Å or
less the list itself needs ``neigh_modify one``, which matdx's parameters do not set.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from ase import Atoms

from matdx.codes.base import read_parameters_record
from matdx.codes.errors import Kind, NoCorrection
from matdx.codes.handlers import Correction, ErrorHandler, read_text
from matdx.codes.lammps import LOG, read_log

__all__ = [
    "LammpsBondAtomsMissing",
    "LammpsNeighborOverflow",
    "LammpsNonFiniteThermo",
    "LammpsOutOfRange",
]

MIN_TIMESTEP = 0.1
"""Smallest timestep (fs) a correction proposes."""


def _halve_timestep(handler: ErrorHandler, directory: Path, parameters: Mapping[str, Any],
                    what: str) -> Correction:
    record = read_parameters_record(Path(directory)) or {}
    if record.get("calculation") != "md":
        raise NoCorrection(f"{what} in a minimisation or static run: check the structure and "
                           "the potential")
    dt = float(parameters.get("timestep", 1.0))
    if dt / 2 < MIN_TIMESTEP:
        raise NoCorrection(f"{what} even with a {dt} fs timestep")
    return Correction(
        handler=handler.name,
        description=f"{what} in MD with a {dt} fs timestep: use {dt / 2} fs",
        parameter_updates={"timestep": dt / 2},
        errors=(handler.name,),
    )


class _LogPattern(ErrorHandler):
    pattern: ClassVar[re.Pattern[str]]

    def found(self, directory: Path) -> str | None:
        match = self.pattern.search(read_text(Path(directory) / LOG))
        return match.group(0) if match else None

    def detect(self, directory: Path) -> bool:
        return self.found(directory) is not None


class LammpsOutOfRange(_LogPattern):
    """``Out of range atoms - cannot compute PPPM`` (or MSM): an atom left the long-range
    solver's grid in one step. Halve the MD timestep."""

    name = "out_of_range_atoms"
    kind: ClassVar[Kind] = "numerical"
    default_max_corrections = 3
    pattern = re.compile(r"ERROR.*Out of range atoms[^\n]*")

    def correct(
        self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms
    ) -> Correction:
        return _halve_timestep(self, directory, parameters, "atoms out of range")


class LammpsBondAtomsMissing(_LogPattern):
    """``Bond atoms N M missing`` (Angle/Dihedral/Improper alike): a bonded partner moved
    beyond the ghost-atom cutoff in one step. Halve the MD timestep."""

    name = "bond_atoms_missing"
    kind: ClassVar[Kind] = "numerical"
    default_max_corrections = 3
    pattern = re.compile(r"ERROR.*(?:Bond|Angle|Dihedral|Improper) atoms [^\n]*missing[^\n]*")

    def correct(
        self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms
    ) -> Correction:
        return _halve_timestep(self, directory, parameters, "bonded atoms missing")


_NON_NUMERIC = re.compile(r"ERROR.*Non-numeric (?:atom coords|pressure|positions)[^\n]*")


class LammpsNonFiniteThermo(ErrorHandler):
    """``nan``/``inf`` in the thermodynamic output, or ``Non-numeric atom coords`` /
    ``Non-numeric pressure``: the energy or the forces diverged (overlapping atoms, an
    integration that blew up). Halve the MD timestep; nothing to change in a minimisation."""

    name = "non_finite_thermo"
    kind: ClassVar[Kind] = "numerical"
    default_max_corrections = 3

    def found(self, directory: Path) -> str | None:
        """What is non-finite: the error line, or the first thermo row with nan/inf."""
        text = read_text(Path(directory) / LOG)
        match = _NON_NUMERIC.search(text)
        if match:
            return match.group(0)
        for row in read_log(text).thermo:
            bad = sorted(k for k, v in row.items() if not math.isfinite(v))
            if bad:
                return f"step {row.get('Step', float('nan')):g}: {', '.join(bad)} not finite"
        return None

    def detect(self, directory: Path) -> bool:
        return self.found(directory) is not None

    def correct(
        self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms
    ) -> Correction:
        return _halve_timestep(self, directory, parameters,
                               f"non-finite thermodynamics ({self.found(directory)})")


class LammpsNeighborOverflow(_LogPattern):
    """``Neighbor list overflow, boost neigh_modify one``: an atom has more neighbours within
    cutoff + skin than the list holds. Halve ``neighbor_skin`` (at least 1 Å)."""

    name = "neighbor_overflow"
    kind: ClassVar[Kind] = "input"
    default_max_corrections = 3
    pattern = re.compile(r"ERROR.*Neighbor list overflow[^\n]*")

    def correct(
        self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms
    ) -> Correction:
        record = read_parameters_record(Path(directory)) or {}
        written = (record.get("parameters") or {}).get("neighbor_skin")
        skin = float(parameters.get("neighbor_skin", written if written is not None else 2.0))
        if skin <= 1.0:
            raise NoCorrection(f"neighbour list overflow with a {skin} Å skin: the list needs "
                               "neigh_modify one, which matdx does not set")
        new = max(1.0, skin / 2)
        return Correction(
            handler=self.name,
            description=f"neighbour list overflow with a {skin:g} Å skin: neighbor_skin "
            f"{new:g} Å",
            parameter_updates={"neighbor_skin": new},
            errors=(self.name,),
        )
