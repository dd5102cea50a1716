"""Relaxation of atomic positions and, optionally, the cell."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from ase import Atoms
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS
from pydantic import Field

from matdx.codes.trajectory import MEDIA_TYPE, TrajectoryWriter
from matdx.recipes.calculators import calculator, check_code
from matdx.recipes.static import evaluate
from matdx.workflows import ArtifactFile, Flow, job
from matdx.workflows.maker import Maker

__all__ = ["RelaxMaker", "relax"]


@job
def relax(
    atoms: Atoms,
    code: str = "emt",
    parameters: dict[str, Any] | None = None,
    fmax: float = 0.01,
    relax_cell: bool = True,
    max_steps: int = 300,
) -> dict[str, Any]:
    """Relax positions (and the cell) with BFGS until all forces are below ``fmax``.

    Parameters
    ----------
    fmax
        Force threshold, eV/Å (the cell filter scales stress into the same units).
    relax_cell
        Also relax the cell shape and volume (ASE's ``FrechetCellFilter``).
    max_steps
        Optimizer steps before giving up; ``converged`` is False then.

    Returns
    -------
    dict
        The final structure's energy (eV), forces (eV/Å), stress (eV/Å³), ``converged``,
        ``n_steps`` and the relaxation path as an H5MD ``trajectory`` artifact.
    """
    atoms = atoms.copy()
    atoms.calc = calculator(code, parameters)
    target = FrechetCellFilter(atoms) if relax_cell and atoms.pbc.all() else atoms
    optimizer = BFGS(target, logfile="relax.log")
    with TrajectoryWriter(
        "relax.h5", atoms.numbers, atoms.pbc, forces=True, observables=["potential_energy"]
    ) as frames:

        def record() -> None:  # time is meaningless in a relaxation: frames count steps
            frames.append(
                atoms.positions,
                atoms.cell.array,
                time=0.0,
                step=optimizer.nsteps,
                forces=atoms.get_forces(),
                potential_energy=atoms.get_potential_energy(),
            )

        optimizer.attach(record, interval=1)
        converged = bool(optimizer.run(fmax=fmax, steps=max_steps))
        n_steps = optimizer.nsteps
    atoms.calc = None
    output = evaluate(atoms, code, parameters, calculation="relax")
    output.update(
        converged=converged,
        n_steps=int(n_steps),
        max_force=float(np.linalg.norm(output["forces"], axis=1).max()),
        trajectory=ArtifactFile("relax.h5", media_type=MEDIA_TYPE),
    )
    output["method"]["parameters"] = {
        **(parameters or {}),
        "fmax": fmax,
        "relax_cell": relax_cell,
        "max_steps": max_steps,
    }
    return output


class RelaxMaker(Maker):
    """Relax each structure."""

    name: ClassVar[str] = "relax"
    description: ClassVar[str] = "relax positions and cell with BFGS"
    summary: ClassVar[tuple[str, ...]] = ("energy", "converged", "n_steps", "max_force")

    code: str = "emt"
    parameters: dict[str, Any] = Field(default_factory=dict)
    fmax: float = Field(0.01, gt=0, description="force threshold, eV/Å")
    relax_cell: bool = True
    max_steps: int = Field(300, ge=1)

    def check(self, atoms: Atoms) -> None:
        check_code(self.code, "relax", atoms.get_chemical_symbols())

    def make(self, atoms: Atoms) -> Flow:
        return Flow(
            [relax(atoms, self.code, self.parameters, self.fmax, self.relax_cell, self.max_steps)],
            name=f"relax {atoms.get_chemical_formula()}",
        )
