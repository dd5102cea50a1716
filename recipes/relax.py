"""Relaxation of atomic positions and, optionally, the cell."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from ase import Atoms
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS
from pydantic import Field

from matdx.codes.registry import code_info
from matdx.codes.trajectory import MEDIA_TYPE, TrajectoryWriter
from matdx.recipes.calculation import run_program
from matdx.recipes.calculators import calculator
from matdx.recipes.maker import CodeMaker
from matdx.recipes.static import evaluate
from matdx.workflows import ArtifactFile, Flow, job

__all__ = ["RelaxMaker", "relax", "relaxed_band_gap", "relaxed_first"]


def _relax_in_process(atoms: Atoms, code: str, parameters: dict[str, Any] | None, fmax: float,
                      relax_cell: bool, max_steps: int) -> dict[str, Any]:
    atoms = atoms.copy()
    atoms.calc = calculator(code, parameters)
    target = FrechetCellFilter(atoms) if relax_cell and atoms.pbc.all() else atoms
    optimizer = BFGS(target, logfile="relax.log")
    with TrajectoryWriter("relax.h5", atoms.numbers, atoms.pbc, forces=True,
                          observables=["potential_energy"]) as frames:

        def record() -> None:  # time is meaningless in a relaxation: frames count steps
            frames.append(atoms.positions, atoms.cell.array, time=0.0, step=optimizer.nsteps,
                          forces=atoms.get_forces(),
                          potential_energy=atoms.get_potential_energy())

        optimizer.attach(record, interval=1)
        converged = bool(optimizer.run(fmax=fmax, steps=max_steps))
        n_steps = optimizer.nsteps
    atoms.calc = None
    output = evaluate(atoms, code, parameters, calculation="relax")
    output.update(converged=converged, n_steps=int(n_steps),
                  trajectory=ArtifactFile("relax.h5", media_type=MEDIA_TYPE))
    output["method"]["parameters"] = {**(parameters or {}), "fmax": fmax,
                                      "relax_cell": relax_cell, "max_steps": max_steps}
    return output


@job
def relax(
    *,
    atoms: Atoms,
    code: str = "emt",
    parameters: dict[str, Any] | None = None,
    protocol: str = "moderate",
    applied: dict[str, int] | None = None,
    fmax: float = 0.01,
    relax_cell: bool = True,
    max_steps: int = 300,
) -> dict[str, Any]:
    """Relax positions (and the cell) until the forces are below ``fmax``.

    In-process codes use ASE's BFGS (with ``FrechetCellFilter`` for the cell); programs use
    their own optimiser (pw.x ``relax``/``vc-relax``, LAMMPS ``minimize``), with the
    protocol's thresholds.

    Parameters
    ----------
    fmax
        Force threshold of the in-process optimiser, eV/Å.
    relax_cell
        Also relax the cell shape and volume.
    max_steps
        Optimiser steps of the in-process optimiser before giving up.

    Returns
    -------
    dict
        The final structure's energy (eV), forces (eV/Å), stress (eV/Å³), ``converged``,
        the relaxation path when the code records one, ``max_force`` (eV/Å) and
        ``band_gap`` (eV; None when the code computes no electronic structure).
    """
    if code_info(code).in_process:
        output = _relax_in_process(atoms, code, parameters, fmax, relax_cell, max_steps)
    else:
        calculation = "vc-relax" if relax_cell and atoms.pbc.all() else "relax"
        output = run_program(atoms, code, calculation, parameters, protocol=protocol,
                             applied=applied)
    if output.get("forces") is not None:
        output["max_force"] = float(np.linalg.norm(output["forces"], axis=1).max())
    output.setdefault("band_gap", None)  # always there for the jobs after it to refer to
    return output


def relaxed_first(structure: Any, settings: dict[str, Any], enabled: bool
                  ) -> tuple[list[Any], Any]:
    """The cell relaxation a recipe starts with, and what the rest of it starts from.

    Returns
    -------
    jobs, start
        ``[relax job]`` and a reference to its structure when ``enabled``; else ``[]`` and
        ``structure`` itself.
    """
    if not enabled:
        return [], structure
    relaxation = relax(atoms=structure, relax_cell=True, **settings)
    return [relaxation], relaxation.output["structure"]


def relaxed_band_gap(jobs: list[Any], code: str) -> dict[str, Any]:
    """Keyword arguments that hand the band gap (eV) found by the relaxation of
    :func:`relaxed_first` to the jobs after it, which choose their occupations with it
    (:func:`matdx.recipes.calculation.for_band_gap`): ``{"band_gap": reference}`` when there
    is a relaxation and ``code`` chooses its occupations by the gap, else ``{}`` (the jobs keep
    the protocol's occupations, and their inputs, hence the results they may reuse, stay
    those of earlier versions)."""
    if not jobs or not code_info(code).inputs.occupations_by_band_gap:
        return {}
    return {"band_gap": jobs[0].output["band_gap"]}


class RelaxMaker(CodeMaker):
    """Relax each structure."""

    name: ClassVar[str] = "relax"
    description: ClassVar[str] = "relax positions and cell"
    summary: ClassVar[tuple[str, ...]] = ("energy", "converged", "max_force", "volume")

    fmax: float = Field(0.01, gt=0, description="force threshold (in-process codes), eV/Å")
    relax_cell: bool = True
    max_steps: int = Field(300, ge=1)

    def make(self, atoms: Atoms, start: Any = None) -> Flow:
        step = relax(atoms=atoms if start is None else start, fmax=self.fmax,
                     relax_cell=self.relax_cell, max_steps=self.max_steps,
                     **self.code_settings())
        return Flow([step], name=f"relax {atoms.get_chemical_formula()}")
