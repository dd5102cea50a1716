"""Static (single-point) calculation: energy, forces and stress of a fixed structure."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from ase import Atoms
from ase.stress import voigt_6_to_full_3x3_stress

from matdx.codes.registry import code_info
from matdx.recipes.calculation import run_program
from matdx.recipes.calculators import calculator, method
from matdx.recipes.maker import CodeMaker
from matdx.workflows import Flow, job

__all__ = ["StaticMaker", "evaluate", "single_point", "static"]


def evaluate(atoms: Atoms, code: str, parameters: dict[str, Any] | None,
             calculation: str = "static") -> dict[str, Any]:
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


def single_point(atoms: Atoms, code: str, parameters: dict[str, Any] | None, protocol: str,
                 applied: dict[str, int] | None, directory: str = "calc") -> dict[str, Any]:
    """A static calculation with any code: in process, or the program in ``directory``."""
    if code_info(code).in_process:
        return evaluate(atoms, code, parameters)
    return run_program(atoms, code, "static", parameters, protocol=protocol, applied=applied,
                       directory=directory)


@job
def static(*, atoms: Atoms, code: str = "emt", parameters: dict[str, Any] | None = None,
           protocol: str = "moderate", applied: dict[str, int] | None = None) -> dict[str, Any]:
    """Single-point energy (eV), forces (eV/Å) and stress (eV/Å³, ASE sign) of ``atoms``.

    ``applied`` counts the error-handler corrections already applied (set by the engine).
    """
    return single_point(atoms, code, parameters, protocol, applied)


class StaticMaker(CodeMaker):
    """A static calculation of each structure."""

    name: ClassVar[str] = "static"
    description: ClassVar[str] = "energy, forces and stress of the structure as given"
    summary: ClassVar[tuple[str, ...]] = ("energy", "band_gap")

    def make(self, atoms: Atoms, start: Any = None) -> Flow:
        return Flow([static(atoms=atoms if start is None else start, **self.code_settings())],
                    name=f"static {atoms.get_chemical_formula()}")
