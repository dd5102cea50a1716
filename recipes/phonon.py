"""Harmonic phonons by finite displacements (phonopy): dispersion, DOS, dynamic stability.

The flow is ``relax → displacements → one force calculation per displaced supercell →
analysis``. The displacement job knows the relaxed cell only when it runs, so it returns a
``Response`` that replaces it with the force jobs and the analysis. The analysis builds the
force constants with phonopy, computes frequencies (THz) along the high-symmetry path that
phonopy chooses with seekpath and on a q-point mesh, the phonon DOS, and flags the structure
dynamically stable when no frequency lies below ``−imaginary_tolerance_THz`` (phonopy reports
imaginary frequencies as negative numbers).

Semiconductors and insulators need fixed occupations. Protocols that smear occupations for
metals (Quantum ESPRESSO's Marzari–Vanderbilt, 0.01 Ry) leave Si's valence-band top partly
empty; a displacement splits those states and their occupations respond nonlinearly: the Γ
optical mode comes out 3–4 % soft, and differently so in a 2×2×2 supercell (14.76 THz) and a
2-atom frozen phonon (14.91 THz) that sample the same k-points on the same FFT grid per cell.
So the force calculations take their occupations from the band gap the relaxation found
(:func:`matdx.recipes.calculation.for_band_gap`: fixed for a gap of 0.1 eV or more with
Quantum ESPRESSO); with fixed occupations the two cells agree
(tests/recipes/test_phonon_kpoints.py). Without the relaxation (``relax_first: false``) the
recipe knows no gap and keeps the protocol's occupations: give them in ``parameters``
(``{system: {occupations: fixed}}``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from ase import Atoms
from pydantic import Field

from matdx.codes.registry import code_info
from matdx.recipes.calculation import fixed_kpoints, for_band_gap
from matdx.recipes.derived import derived_method
from matdx.recipes.maker import CodeMaker
from matdx.recipes.relax import relaxed_band_gap, relaxed_first
from matdx.recipes.static import single_point
from matdx.workflows import ArtifactFile, Flow, Response, job

__all__ = ["FORCE_CONSTANTS", "PhononMaker", "displaced_forces", "phonon_analysis",
           "phonon_displacements"]

FORCE_CONSTANTS = "phonopy_params.yaml"  # phonopy's format: cell, supercell, force constants
PHONOPY_YAML = "application/x-phonopy+yaml"


def _phonopy(unit_cell: Atoms, supercell: list[list[int]]) -> Any:
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    cell = PhonopyAtoms(symbols=unit_cell.get_chemical_symbols(), cell=unit_cell.cell.array,
                        scaled_positions=unit_cell.get_scaled_positions())
    return Phonopy(cell, supercell_matrix=supercell, primitive_matrix="auto")


def _atoms(cell: Any) -> Atoms:
    return Atoms(symbols=cell.symbols, cell=cell.cell, scaled_positions=cell.scaled_positions,
                 pbc=True)


def supercell_kpoints(code: str, protocol: str, parameters: dict[str, Any] | None,
                      unit_cell: Atoms, supercell: list[list[int]]) -> dict[str, Any]:
    """Code parameters whose k-point grid for the supercell is commensurate with the unit
    cell's: the unit cell's Γ-centred grid (from the protocol's density) rounded up to a
    multiple of the supercell's multiples, divided by them. The supercell then samples exactly
    the unit cell's k-points, so that a Γ-point frequency equals a frozen-phonon calculation
    in the unit cell with that grid (a grid chosen from the density for the supercell itself
    need not be commensurate with it).

    Non-diagonal supercells, shifted grids and codes without k-points keep the grid that
    :func:`matdx.recipes.calculation.fixed_kpoints` gives the perfect supercell.
    """
    matrix = np.asarray(supercell, dtype=int)
    unit = fixed_kpoints(code, protocol, parameters, unit_cell)
    kpoints = dict(unit.get("kpoints") or {})
    grid, shift = kpoints.get("grid"), kpoints.get("shift", [0, 0, 0])
    diagonal = np.count_nonzero(matrix - np.diag(np.diag(matrix))) == 0
    if grid is None or not diagonal or any(shift):
        phonon = _phonopy(unit_cell, supercell)
        return fixed_kpoints(code, protocol, parameters, _atoms(phonon.supercell))
    multiples = np.diag(matrix)
    kpoints["grid"] = [max(1, -(-int(n) // int(m))) for n, m in zip(grid, multiples,
                                                                     strict=True)]
    return {**unit, "kpoints": kpoints}


@job
def displaced_forces(*, atoms: Atoms, code: str = "emt", parameters: dict[str, Any] | None = None,
                     protocol: str = "moderate", applied: dict[str, int] | None = None
                     ) -> dict[str, Any]:
    """Forces (eV/Å) on the atoms of one displaced supercell."""
    return single_point(atoms, code, parameters, protocol, applied)


@job(retries=0)
def phonon_displacements(structure: Atoms, supercell: list[list[int]], displacement: float,
                         code_settings: dict[str, Any], mesh: list[int],
                         imaginary_tolerance_THz: float, band_gap: float | None = None
                         ) -> Response:
    """Displaced supercells of ``structure`` (phonopy, symmetry-reduced); replaced by their
    force jobs and the analysis. The force jobs use the occupations the code chooses for
    ``band_gap`` (eV, found by the relaxation; None: the protocol's)."""
    phonon = _phonopy(structure, supercell)
    phonon.generate_displacements(distance=displacement)
    cells = [_atoms(cell) for cell in phonon.supercells_with_displacements]
    settings = dict(code_settings)
    settings["parameters"] = for_band_gap(settings.get("code", "emt"),
                                          settings.get("parameters"), band_gap)
    # All displaced supercells share one cell and one k-point grid, commensurate with the
    # unit cell's.
    settings["parameters"] = supercell_kpoints(settings.get("code", "emt"),
                                               settings.get("protocol", "moderate"),
                                               settings.get("parameters"), structure, supercell)
    forces = [displaced_forces(atoms=cell, **settings) for cell in cells]
    analysis = phonon_analysis(structure, supercell, phonon.dataset,
                               [f.output["forces"] for f in forces], mesh,
                               imaginary_tolerance_THz, [f.output["method"] for f in forces])
    return Response(output={"n_displacements": len(cells), "supercell": supercell},
                    replace=Flow([*forces, analysis], output=analysis.output))


@job(retries=0)
def phonon_analysis(structure: Atoms, supercell: list[list[int]], dataset: dict[str, Any],
                    forces: list[np.ndarray], mesh: list[int],
                    imaginary_tolerance_THz: float = 0.1,
                    methods: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Force constants, dispersion along the high-symmetry path, DOS and dynamic stability.

    Returns
    -------
    dict
        ``min_frequency_THz``, ``max_frequency_THz``, ``dynamically_stable``, the structure,
        ``force_constants`` (artifact :data:`FORCE_CONSTANTS`, read by ``phonopy.load``) and
        ``data`` (:class:`matdx.store.result_models.PhononData`: dispersion along the path
        with its segments' labels, DOS (states/THz per primitive cell), free energy, entropy
        and heat capacity from 0 to 1000 K).
    """
    phonon = _phonopy(structure, supercell)
    phonon.dataset = dataset
    phonon.forces = np.asarray(forces, dtype=float)
    phonon.produce_force_constants()
    phonon.symmetrize_force_constants()
    phonon.auto_band_structure(npoints=51)
    bands = phonon.band_structure
    phonon.run_mesh(mesh)
    phonon.run_total_dos()
    dos = phonon.total_dos
    phonon.run_thermal_properties(t_min=0, t_max=1000, t_step=10)
    thermal = phonon.thermal_properties
    mesh_frequencies = np.asarray(phonon.mesh.frequencies)
    band_frequencies = np.concatenate([np.asarray(f) for f in bands.frequencies])
    lowest = float(min(band_frequencies.min(), mesh_frequencies.min()))
    phonon.save(FORCE_CONSTANTS, settings={"force_constants": True})
    sizes = np.cumsum([0, *(len(q) for q in bands.qpoints)])
    segments = [[int(sizes[i]), int(sizes[i + 1] - 1)] for i in range(len(sizes) - 1)]
    labels = _segment_labels(bands.labels, bands.path_connections, len(segments))
    distances = np.concatenate([np.asarray(d) for d in bands.distances])
    settings = {"supercell": supercell, "mesh": mesh, "phonopy_version": phonon.version,
                "imaginary_tolerance_THz": imaginary_tolerance_THz}
    return {
        "min_frequency_THz": lowest,
        "max_frequency_THz": float(band_frequencies.max()),
        "dynamically_stable": lowest > -imaginary_tolerance_THz,
        "n_displacements": len(forces),
        "structure": structure,
        "force_constants": ArtifactFile(FORCE_CONSTANTS, media_type=PHONOPY_YAML,
                                        name=FORCE_CONSTANTS),
        "data": {
            "kind": "phonon",
            "supercell_matrix": np.asarray(supercell, dtype=int),
            "primitive_matrix": np.asarray(phonon.primitive_matrix, dtype=float),
            "band_qpoints": np.concatenate([np.asarray(q) for q in bands.qpoints]),
            "band_distances": distances,
            "band_frequencies_THz": band_frequencies,
            "band_segments": segments,
            "band_labels": labels,
            "dos_frequencies_THz": np.asarray(dos.frequency_points),
            "dos_states_per_THz": np.asarray(dos.dos),
            "temperatures_K": np.asarray(thermal.temperatures),
            "free_energy_kJ_per_mol": np.asarray(thermal.free_energy),
            "entropy_J_per_K_mol": np.asarray(thermal.entropy),
            "heat_capacity_J_per_K_mol": np.asarray(thermal.heat_capacity),
            "force_constants_artifact": FORCE_CONSTANTS,
        },
        "method": derived_method(methods or [], "phonon", settings),
    }


def _label(text: str) -> str:
    """A phonopy path label (LaTeX: ``$\\Gamma$``, ``$\\mathrm{X}$``) as plain text."""
    plain = text.replace("$", "").replace("\\mathrm{", "").replace("}", "")
    return "Γ" if plain in ("\\Gamma", "G", "GAMMA") else plain


def _segment_labels(labels: Any, connections: Any, n_segments: int) -> list[list[str]]:
    """[start, end] label of each path segment, from phonopy's labels (one per point where
    the path turns or breaks) and its path connections."""
    if labels is None:
        return [["", ""] for _ in range(n_segments)]
    plain = [_label(str(label)) for label in labels]
    connected = list(connections) if connections is not None else [True] * n_segments
    pairs, index = [], 0
    for segment in range(n_segments):
        pairs.append([plain[index], plain[index + 1]])
        index += 1 if connected[segment] else 2
    return pairs


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
        settings["parameters"] = code_info(self.code).inputs.for_forces(settings["parameters"])
        jobs, reference = relaxed_first(atoms if start is None else start, settings,
                                        self.relax_first)
        displacements = phonon_displacements(reference, self.supercell, self.displacement,
                                             settings, self.mesh, self.imaginary_tolerance_THz,
                                             **relaxed_band_gap(jobs, self.code))
        return Flow([*jobs, displacements], name=f"phonon {atoms.get_chemical_formula()}")
