"""Harmonic phonons by finite displacements (phonopy): dispersion, DOS, dynamic stability.

The flow is ``relax → displacements → one force calculation per displaced supercell →
analysis``. The displacement job knows the relaxed cell only when it runs, so it returns a
``Response`` that replaces it with the force jobs and the analysis. The analysis builds the
force constants with phonopy, computes frequencies (THz) along the high-symmetry path that
phonopy chooses with seekpath and on a q-point mesh, the phonon DOS, and flags the structure
dynamically stable when no frequency lies below ``−imaginary_tolerance_THz`` (phonopy reports
imaginary frequencies as negative numbers).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from ase import Atoms
from pydantic import Field

from matdx.recipes.calculation import fixed_kpoints
from matdx.recipes.maker import CodeMaker
from matdx.recipes.relax import relaxed_first
from matdx.recipes.static import single_point
from matdx.workflows import Flow, Response, job

__all__ = ["PhononMaker", "displaced_forces", "phonon_analysis", "phonon_displacements"]


def _phonopy(unit_cell: Atoms, supercell: list[list[int]]) -> Any:
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    cell = PhonopyAtoms(symbols=unit_cell.get_chemical_symbols(), cell=unit_cell.cell.array,
                        scaled_positions=unit_cell.get_scaled_positions())
    return Phonopy(cell, supercell_matrix=supercell, primitive_matrix="auto")


def _atoms(cell: Any) -> Atoms:
    return Atoms(symbols=cell.symbols, cell=cell.cell, scaled_positions=cell.scaled_positions,
                 pbc=True)


@job
def displaced_forces(*, atoms: Atoms, code: str = "emt", parameters: dict[str, Any] | None = None,
                     protocol: str = "moderate", applied: dict[str, int] | None = None
                     ) -> dict[str, Any]:
    """Forces (eV/Å) on the atoms of one displaced supercell."""
    return single_point(atoms, code, parameters, protocol, applied)


@job(retries=0)
def phonon_displacements(structure: Atoms, supercell: list[list[int]], displacement: float,
                         code_settings: dict[str, Any], mesh: list[int],
                         imaginary_tolerance_THz: float) -> Response:
    """Displaced supercells of ``structure`` (phonopy, symmetry-reduced); replaced by their
    force jobs and the analysis."""
    phonon = _phonopy(structure, supercell)
    phonon.generate_displacements(distance=displacement)
    cells = [_atoms(cell) for cell in phonon.supercells_with_displacements]
    settings = dict(code_settings)
    # All displaced supercells share one cell: one k-point grid, the perfect supercell's.
    settings["parameters"] = fixed_kpoints(settings.get("code", "emt"),
                                           settings.get("protocol", "moderate"),
                                           settings.get("parameters"), _atoms(phonon.supercell))
    forces = [displaced_forces(atoms=cell, **settings) for cell in cells]
    analysis = phonon_analysis(structure, supercell, phonon.dataset,
                               [f.output["forces"] for f in forces], mesh,
                               imaginary_tolerance_THz)
    return Response(output={"n_displacements": len(cells), "supercell": supercell},
                    replace=Flow([*forces, analysis], output=analysis.output))


@job(retries=0)
def phonon_analysis(structure: Atoms, supercell: list[list[int]], dataset: dict[str, Any],
                    forces: list[np.ndarray], mesh: list[int],
                    imaginary_tolerance_THz: float = 0.1) -> dict[str, Any]:
    """Force constants, dispersion along the high-symmetry path, DOS and dynamic stability.

    Returns
    -------
    dict
        ``min_frequency_THz``, ``dynamically_stable``, ``band_distances`` and
        ``band_frequencies_THz`` (path points × branches), ``band_labels``, ``dos_frequencies_THz``
        and ``dos`` (states/THz per primitive cell), and the structure.
    """
    phonon = _phonopy(structure, supercell)
    phonon.dataset = dataset
    phonon.forces = np.asarray(forces, dtype=float)
    phonon.produce_force_constants()
    phonon.symmetrize_force_constants()
    phonon.auto_band_structure(npoints=51)
    bands = phonon.get_band_structure_dict()
    phonon.run_mesh(mesh)
    phonon.run_total_dos()
    dos = phonon.get_total_dos_dict()
    mesh_frequencies = phonon.get_mesh_dict()["frequencies"]
    band_frequencies = np.concatenate([np.asarray(f) for f in bands["frequencies"]])
    lowest = float(min(band_frequencies.min(), np.asarray(mesh_frequencies).min()))
    labels = bands.get("labels")
    return {
        "min_frequency_THz": lowest,
        "max_frequency_THz": float(band_frequencies.max()),
        "dynamically_stable": lowest > -imaginary_tolerance_THz,
        "band_distances": np.concatenate([np.asarray(d) for d in bands["distances"]]),
        "band_frequencies_THz": band_frequencies,
        "band_labels": [str(label) for label in labels] if labels is not None else [],
        "dos_frequencies_THz": np.asarray(dos["frequency_points"]),
        "dos": np.asarray(dos["total_dos"]),
        "n_displacements": len(forces),
        "structure": structure,
        "method": {"calculation": "phonon", "parameters": {
            "supercell": supercell, "mesh": mesh, "phonopy_version": phonon.version,
            "imaginary_tolerance_THz": imaginary_tolerance_THz}},
    }


class PhononMaker(CodeMaker):
    """Phonons of each structure by finite displacements."""

    name: ClassVar[str] = "phonon"
    description: ClassVar[str] = "phonopy finite displacements: dispersion, DOS, stability"
    summary: ClassVar[tuple[str, ...]] = ("min_frequency_THz", "max_frequency_THz",
                                          "dynamically_stable", "n_displacements")

    supercell: list[list[int]] = Field(default_factory=lambda: [[2, 0, 0], [0, 2, 0],
                                                                  [0, 0, 2]])
    displacement: float = Field(0.01, gt=0, le=0.1, description="atomic displacement, Å")
    mesh: list[int] = Field(default_factory=lambda: [20, 20, 20])
    imaginary_tolerance_THz: float = Field(0.1, ge=0)
    relax_first: bool = True

    def check(self, atoms: Atoms, *, local: bool = True) -> None:
        if not atoms.pbc.all():
            raise ValueError("structure: phonons need a periodic cell")
        if np.linalg.det(np.asarray(self.supercell)) < 1:
            raise ValueError("supercell: the matrix must have a positive determinant")
        super().check(atoms, local=local)

    def make(self, atoms: Atoms, start: Any = None) -> Flow:
        settings = self.code_settings()
        if self.code == "espresso":  # forces of a few meV/Å need a tight SCF
            electrons = settings["parameters"].setdefault("electrons", {})
            electrons.setdefault("conv_thr", 1e-10)
        jobs, reference = relaxed_first(atoms if start is None else start, settings,
                                        self.relax_first)
        displacements = phonon_displacements(reference, self.supercell, self.displacement,
                                             settings, self.mesh, self.imaginary_tolerance_THz)
        return Flow([*jobs, displacements], name=f"phonon {atoms.get_chemical_formula()}")
