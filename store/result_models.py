"""Per-recipe result data of derived records: typed, versioned, with unit and shape.

A record's ``results.data`` holds the arrays a recipe computed, as one of the models below
(chosen by ``kind``; ``version`` moves when a model changes). Field names carry the unit; each
field's description states its shape. Small arrays are inline; large ones are artifacts of the
record, named here by their artifact ``name`` (the record's ``artifacts`` give their sha256):
the force constants of a phonon record are ``phonopy_params.yaml`` in phonopy's own format
(``phonopy.load`` reads it back).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["BandsData", "EOSData", "ElasticData", "MDAnalysisData", "PhononData", "RecipeData"]

Vector = list[float]
Matrix = list[list[float]]


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1


class EOSData(_Data):
    """Energy–volume points and their third-order Birch–Murnaghan fit."""

    kind: Literal["eos"] = "eos"
    volumes_A3: Vector = Field(description="(n,) Å³, cell volumes sampled")
    energies_eV: Vector = Field(description="(n,) eV, total energies at those volumes")
    fit: Literal["birch-murnaghan-3"] = "birch-murnaghan-3"
    E0_eV: float
    V0_A3: float
    B0_GPa: float = Field(description="range-extrapolated bulk modulus, GPa")
    B0_GPa_err: float = Field(description="GPa; covers the fit-range sensitivity")
    B0_GPa_full_range: float = Field(description="GPa, fit of all points")
    B0_GPa_half_range: float | None = Field(description="GPa, fit within half the range")
    B0_prime: float
    covariance: Matrix = Field(
        description="(4, 4) covariance of the full fit's (E0 eV, V0 Å³, B0 eV/Å³, B0')")
    rms_residual_eV: float


class ElasticData(_Data):
    """Strains, stresses and the elastic constants fitted to them."""

    kind: Literal["elastic"] = "elastic"
    components: list[int] = Field(description="(n,) Voigt component strained, 0-5 = xx..xy")
    strains: Vector = Field(description="(n,) Voigt strain (engineering shear), 1")
    stresses_GPa: Matrix = Field(description="(n, 6) GPa, Voigt stress, ASE sign (tension +)")
    C_GPa: Matrix = Field(description="(6, 6) GPa, zero-strain extrapolation, Voigt order")
    C_err_GPa: Matrix = Field(description="(6, 6) GPa, covers the strain sensitivity")
    fit_residual_GPa: float = Field(description="largest residual of the linear fit, GPa")
    strain_magnitudes: Vector = Field(description="(2,) the two strain magnitudes δ, 2δ")


class PhononData(_Data):
    """Harmonic phonons: dispersion, DOS, thermal properties; force constants as artifact."""

    kind: Literal["phonon"] = "phonon"
    supercell_matrix: list[list[int]] = Field(description="(3, 3) supercell of the unit cell")
    primitive_matrix: Matrix = Field(description="(3, 3) primitive cell of the unit cell")
    band_qpoints: Matrix = Field(description="(n_q, 3) reduced coordinates of the primitive cell")
    band_distances: Vector = Field(description="(n_q,) 2π/Å, distance along the path")
    band_frequencies_THz: Matrix = Field(description="(n_q, n_branches) THz; imaginary < 0")
    band_segments: list[list[int]] = Field(
        description="(n_segments, 2) first and last q-point index of each path segment")
    band_labels: list[list[str]] = Field(description="(n_segments, 2) start and end labels")
    dos_frequencies_THz: Vector = Field(description="(n_f,) THz")
    dos_states_per_THz: Vector = Field(description="(n_f,) states/THz per primitive cell")
    temperatures_K: Vector = Field(description="(n_T,) K")
    free_energy_kJ_per_mol: Vector = Field(description="(n_T,) kJ/mol of primitive cells")
    entropy_J_per_K_mol: Vector = Field(description="(n_T,) J/(K mol)")
    heat_capacity_J_per_K_mol: Vector = Field(description="(n_T,) J/(K mol), constant volume")
    force_constants_artifact: str = Field(
        description="name of the record's artifact in phonopy's format (phonopy_params.yaml)")


class BandsData(_Data):
    """Electronic eigenvalues along the high-symmetry path and the DOS."""

    kind: Literal["bands"] = "bands"
    kpoints: Matrix = Field(description="(n_k, 3) k-points of the path as the code gave them")
    eigenvalues_eV: list[Matrix] = Field(description="(n_spin, n_k, n_bands) eV")
    mesh_eigenvalues_eV: list[Matrix] | None = Field(
        None, description="(n_spin, n_mesh, n_bands) eV, on the SCF's k-point mesh")
    special_points: dict[str, Vector] = Field(description="label -> reduced coordinates")
    fermi_level_eV: float
    band_gap_eV: float
    dos_energies_eV: Vector = Field(description="(n_e,) eV")
    dos_states_per_eV: Vector | Matrix = Field(
        description="(n_e,) or (n_spin, n_e) states/eV per cell (and spin)")


class MDAnalysisData(_Data):
    """Structure and dynamics from an MD trajectory, with the run's thermostat."""

    kind: Literal["md-analysis"] = "md-analysis"
    ensemble: str | None = None
    thermostat: str | None = None
    temperature_K: float | None = None
    timestep_fs: float | None = None
    r_A: Vector | None = Field(None, description="(n_r,) Å, bin centres of g(r)")
    g_r: Vector | None = Field(None, description="(n_r,) radial distribution function, 1")
    time_fs: Vector | None = Field(None, description="(n_t,) fs, lag times of the MSD")
    msd_A2: Vector | None = Field(None, description="(n_t,) Å², mean squared displacement")
    fit_window_fs: Vector | None = Field(None, description="(2,) fs, linear regime fitted")
    D_cm2_per_s: float | None = None
    D_cm2_per_s_err: float | None = None


RecipeData = Annotated[EOSData | ElasticData | PhononData | BandsData | MDAnalysisData,
                       Field(discriminator="kind")]
