"""The calculation record: one per job attempt that ran, validated on every write.

Units: energies eV, lengths Å, forces eV/Å, stress eV/Å³, time fs, temperature K, elastic
constants and moduli GPa.

Stress sign convention (``STRESS_CONVENTION``): ASE's, σ = (1/V) ∂E/∂ε, so a cell under
compression has negative diagonal stress and pressure P = −tr(σ)/3 is positive.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "SCHEMA_VERSION",
    "STRESS_CONVENTION",
    "ArtifactReference",
    "CalculationRecord",
    "Governance",
    "Method",
    "Results",
    "Run",
    "System",
]

SCHEMA_VERSION = 1
STRESS_CONVENTION = "ase: sigma = (1/V) dE/d(strain); negative under compression"

Access = Literal["private", "group", "embargoed", "public"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class System(_Section):
    """The structure, in OPTIMADE's field names (Å, Cartesian)."""

    lattice_vectors: list[list[float]]
    cartesian_site_positions: list[list[float]]
    species_at_sites: list[str]
    species: list[dict[str, Any]]
    dimension_types: list[int]
    nperiodic_dimensions: int
    nsites: int
    elements: list[str]
    nelements: int
    elements_ratios: list[float]
    chemical_formula_reduced: str
    chemical_formula_hill: str
    chemical_formula_anonymous: str
    structure_hash: str


class Method(_Section):
    """How the calculation was done."""

    code: str | None = None
    code_version: str | None = None
    calculation: str | None = None  # static, relax, md, eos-fit, analysis, ...
    functional: str | None = None
    pseudopotentials: list[dict[str, str]] = Field(default_factory=list)  # element, name, sha256
    basis: dict[str, Any] = Field(default_factory=dict)  # cutoffs (eV) or basis sets
    kpoints: dict[str, Any] = Field(default_factory=dict)
    smearing: dict[str, Any] = Field(default_factory=dict)
    spin: dict[str, Any] = Field(default_factory=dict)
    parameters: dict[str, Any] = Field(default_factory=dict)  # the complete raw input


class Results(_Section):
    """Computed quantities with units in their names or documented here."""

    energy: float | None = None  # eV
    energy_per_atom: float | None = None  # eV/atom
    forces: list[list[float]] | None = None  # (n_sites, 3) eV/Å
    stress: list[list[float]] | None = None  # (3, 3) eV/Å³, STRESS_CONVENTION
    stress_convention: str | None = None
    magnetic_moments: list[float] | None = None  # μB per site
    total_magnetization: float | None = None  # μB per cell
    band_gap: float | None = None  # eV
    fermi_level: float | None = None  # eV
    converged: bool | None = None
    md: dict[str, Any] | None = None  # duration_fs, timestep_fs, temperature_K, n_frames
    properties: dict[str, Any] = Field(default_factory=dict)  # other scalars, unit in the name


class ArtifactReference(_Section):
    role: Literal["input", "output"]
    name: str
    media_type: str
    size: int  # bytes
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class Run(_Section):
    status: Literal["completed", "failed"]
    matdx_version: str
    versions: dict[str, str] = Field(default_factory=dict)
    host: str = ""
    scheduler_job_id: str | None = None
    batch_id: str | None = None
    run_dir: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    walltime_s: float | None = None
    corrections: list[dict[str, Any]] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    error: dict[str, Any] | None = None  # type, message, last_line, kind


class Governance(_Section):
    owner: str = ""
    project: str = ""
    access: Access = "private"
    embargo_until: datetime | None = None
    license: str = ""  # SPDX identifier
    export_control: bool = False


class CalculationRecord(_Section):
    """One record per job attempt (ARCHITECTURE.md, "The calculation record")."""

    record_id: str
    schema_version: Literal[1] = SCHEMA_VERSION
    input_hash: str | None
    campaign_id: str
    workflow_id: str
    job_id: str
    job_name: str
    function: str
    attempt: int = Field(ge=1)
    tags: list[str] = Field(default_factory=list)
    parents: list[str] = Field(default_factory=list)  # record ids whose outputs were inputs
    retry_of: str | None = None  # record of the failed attempt this one corrects
    system: System | None = None
    method: Method = Field(default_factory=Method)
    results: Results = Field(default_factory=Results)
    artifacts: list[ArtifactReference] = Field(default_factory=list)
    run: Run
    governance: Governance = Field(default_factory=Governance)
