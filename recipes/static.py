"""Static (single-point) calculation: energy, forces and stress of a fixed structure."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from ase import Atoms
from ase.stress import voigt_6_to_full_3x3_stress
from pydantic import Field

from matdx.recipes.calculators import calculator, check_code, method
from matdx.workflows import Flow, job
from matdx.workflows.maker import Maker

__all__ = ["StaticMaker", "evaluate", "static"]


def evaluate(
    atoms: Atoms, code: str, parameters: dict[str, Any] | None, calculation: str = "static"
) -> dict[str, Any]:
    """Energy (eV), forces (eV/Å) and, for periodic cells, stress (3×3, eV/Å³, ASE sign) of
    ``atoms`` (not modified) with an in-process code."""
    atoms = atoms.copy()
    atoms.calc = calculator(code, parameters)
    output: dict[str, Any] = {
        "energy": float(atoms.get_potential_energy()),
        "forces": np.asarray(atoms.get_forces()),
    }
    if atoms.pbc.all():
        output["stress"] = voigt_6_to_full_3x3_stress(atoms.get_stress())
    atoms.calc = None
    output["structure"] = atoms
    output["volume"] = float(atoms.get_volume()) if atoms.pbc.all() else None
    output["converged"] = True
    output["method"] = method(code, calculation, parameters)
    return output


@job
def static(
    atoms: Atoms, code: str = "emt", parameters: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Single-point energy, forces and stress; see :func:`evaluate`."""
    return evaluate(atoms, code, parameters)


class StaticMaker(Maker):
    """A static calculation of each structure."""

    name: ClassVar[str] = "static"
    description: ClassVar[str] = "energy, forces and stress of the structure as given"
    summary: ClassVar[tuple[str, ...]] = ("energy",)

    code: str = "emt"
    parameters: dict[str, Any] = Field(default_factory=dict)

    def check(self, atoms: Atoms) -> None:
        check_code(self.code, "static", atoms.get_chemical_symbols())

    def make(self, atoms: Atoms) -> Flow:
        return Flow(
            [static(atoms, self.code, self.parameters)],
            name=f"static {atoms.get_chemical_formula()}",
        )
