"""The calculation record: one per job attempt that ran, validated on every write.

Units: energies eV, lengths Å, forces eV/Å, stress eV/Å³, time fs, temperature K, elastic
constants and moduli GPa.

Stress sign convention (``STRESS_CONVENTION``): ASE's, σ = (1/V) ∂E/∂ε, so a cell under
compression has negative diagonal stress and pressure P = −tr(σ)/3 is positive.

Versions: the schema is published as JSON Schema in ``docs/schema/record-v<N>.json``
(:mod:`matdx.store.schema`). Stored documents are never rewritten when the version moves;
:func:`upgrade_document` brings an old document to the current version when it is read.

- v1: the first schema.
- v2: ``governance.license`` is an SPDX license expression or null (v1: any text, "" for
  none); ``governance.embargo_until`` is set exactly when ``access`` is ``embargoed``.
- v3: ``method.potential`` (interatomic potential: pair style and files) and
  ``method.protocol``; ``results.data``, the arrays of a recipe (E(V), strains and stresses,
  phonon dispersion and DOS, eigenvalues, g(r) and MSD) in typed per-recipe models; derived
  records (EOS, elastic and phonon fits, MD analyses) carry the
  method of the calculations they were derived from (:func:`method_identity`).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from matdx.store.fieldpath import field_path
from matdx.store.licenses import LicenseError, normalize_license
from matdx.store.result_models import RecipeData

__all__ = [
    "ACCESS_LEVELS",
    "SCHEMA_VERSION",
    "STRESS_CONVENTION",
    "ArtifactReference",
    "CalculationRecord",
    "Governance",
    "Method",
    "RecordSchemaError",
    "Results",
    "Run",
    "System",
    "method_identity",
    "method_label",
    "potential_of",
    "upgrade_document",
    "validate_document",
]

SCHEMA_VERSION = 3
STRESS_CONVENTION = "ase: sigma = (1/V) dE/d(strain); negative under compression"

# From most to least restricted (see matdx.store.access for who sees what).
ACCESS_LEVELS = ("private", "group", "embargoed", "public")
Access = Literal["private", "group", "embargoed", "public"]


class RecordSchemaError(ValueError):
    """A record document does not follow the schema; the message names each bad field."""


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
    """How the calculation was done.

    ``pseudopotentials`` lists, per element, the pseudopotential's name and sha256; files of an
    interatomic potential (LAMMPS) are listed there too, with no element. ``potential`` names
    the interatomic potential (``"eam/alloy: Cu_mishin1.eam.alloy"``), ``protocol`` the accuracy
    level of the code's defaults. A derived record (a fit or an analysis of other records) has
    the method of the calculations it was derived from, with its own ``calculation`` and its
    own settings in ``parameters`` (the inputs' raw parameters under ``input_parameters``).
    """

    code: str | None = None
    code_version: str | None = None
    calculation: str | None = None  # static, relax, md, eos-fit, analysis, ...
    functional: str | None = None
    potential: str | None = None
    protocol: str | None = None
    pseudopotentials: list[dict[str, str | None]] = Field(default_factory=list)
    basis: dict[str, Any] = Field(default_factory=dict)  # cutoffs (eV) or basis sets
    kpoints: dict[str, Any] = Field(default_factory=dict)
    smearing: dict[str, Any] = Field(default_factory=dict)
    spin: dict[str, Any] = Field(default_factory=dict)
    parameters: dict[str, Any] = Field(default_factory=dict)  # the complete raw input

    @property
    def label(self) -> str:
        """:func:`method_label` of this method."""
        return method_label(self.code, self.functional, self.potential, self.protocol)


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
    data: RecipeData | None = None  # a recipe's arrays (matdx.store.result_models)


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
    """Who owns a record and who may see it (ARCHITECTURE.md, "governance").

    ``access``       discovery metadata           results, output, artifacts, method
    ``private``      the owner                    the owner
    ``group``        owner + ``project`` members  owner + ``project`` members
    ``embargoed``    everyone                     owner + ``project`` members until
                                                  ``embargo_until``, then everyone
    ``public``       everyone                     everyone

    Discovery metadata: ``record_id``, formula (``system.chemical_formula_reduced``),
    ``system.elements``, calculation type (``method.calculation``), ``governance.owner``,
    ``governance.project``, ``governance.access``, ``governance.embargo_until`` and the
    record's date (``created_at``); under a running embargo outsiders, anonymous readers
    included, see only these, and result filters do not match the record for them.
    ``export_control``: the record is seen only by the owner and the project's members and
    never leaves the store through an export, an archive or the public API, whatever its
    access level; its results are never reused by a campaign outside that boundary.
    """

    owner: str = Field("", max_length=100)
    project: str = Field("", max_length=100)
    access: Access = "private"
    embargo_until: datetime | None = None  # UTC; naive times are taken as UTC
    license: str | None = Field(None, max_length=200)  # SPDX license expression
    export_control: bool = False

    @field_validator("license", mode="before")
    @classmethod
    def _spdx(cls, value: Any) -> Any:
        if value is None or isinstance(value, str):
            try:
                return normalize_license(value)
            except LicenseError as err:
                raise ValueError(str(err).removeprefix("license: ")) from err
        return value

    @field_validator("embargo_until")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @model_validator(mode="after")
    def _embargo_needs_a_date(self) -> Governance:
        if self.access == "embargoed" and self.embargo_until is None:
            raise ValueError("access 'embargoed' needs embargo_until (the date it ends)")
        if self.access != "embargoed" and self.embargo_until is not None:
            raise ValueError(
                f"embargo_until is only meaningful with access 'embargoed', not {self.access!r}"
            )
        return self


class CalculationRecord(_Section):
    """One record per job attempt (ARCHITECTURE.md, "The calculation record")."""

    record_id: str
    schema_version: Literal[3] = SCHEMA_VERSION
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


def _v1_to_v2(document: dict[str, Any]) -> dict[str, Any]:
    """v1 → v2: licences become SPDX expressions or null; embargoes get consistent dates.

    A v1 licence text that is not SPDX becomes ``LicenseRef-<text>`` (SPDX's form for
    unlisted licences), so no information is lost. An embargo without a date, which would never
    end, becomes ``group`` access (the safer reading); a date without an embargo is dropped.
    """
    governance = document.setdefault("governance", {})
    text = governance.get("license")
    if not text:
        governance["license"] = None
    else:
        try:
            governance["license"] = normalize_license(text)
        except LicenseError:
            name = re.sub(r"[^A-Za-z0-9.\-]+", "-", text).strip("-") or "unknown"
            governance["license"] = f"LicenseRef-{name}"
    if governance.get("access") == "embargoed" and not governance.get("embargo_until"):
        governance["access"] = "group"
    elif governance.get("access", "private") != "embargoed":
        governance.pop("embargo_until", None)
    document["schema_version"] = 2
    return document


def potential_of(method: dict[str, Any]) -> str | None:
    """The interatomic potential a method section names: the files listed without an element
    in ``pseudopotentials`` (potential files), after the pair style in ``parameters`` when it
    has one; None when there are no potential files."""
    files = [str(p.get("name")) for p in method.get("pseudopotentials") or []
             if p.get("element") is None and p.get("name")]
    if not files:
        return None
    style = (method.get("parameters") or {}).get("pair_style")
    return f"{style}: {', '.join(files)}" if style else ", ".join(files)


def method_label(code: str | None, functional: str | None = None,
                 potential: str | None = None, protocol: str | None = None) -> str:
    """One line naming a method, for tables and exports: ``lammps | eam/alloy:
    Cu_mishin1.eam.alloy``, ``espresso | PBE | moderate``; "" when nothing is known."""
    return " | ".join(str(part) for part in (code, functional, potential, protocol) if part)


def method_identity(method: dict[str, Any]) -> dict[str, Any]:
    """What makes two calculations comparable: code and version, functional, potential,
    pseudopotentials (name and sha256 per element or file), protocol and basis. Results of
    calculations whose identities differ must not be fitted or averaged together."""
    return {
        "code": method.get("code"),
        "code_version": method.get("code_version"),
        "functional": method.get("functional"),
        "potential": method.get("potential") or potential_of(method),
        "pseudopotentials": sorted(
            (str(p.get("element")), str(p.get("name")), str(p.get("sha256")))
            for p in method.get("pseudopotentials") or []
        ),
        "protocol": method.get("protocol") or (method.get("parameters") or {}).get("protocol"),
        "basis": method.get("basis") or {},
    }


def _v2_to_v3(document: dict[str, Any]) -> dict[str, Any]:
    """v2 → v3: ``method.potential`` and ``method.protocol`` from what the method already
    lists (potential files, ``parameters.protocol``). Derived records gain their parents'
    method in the store migration, which can read the parents."""
    method = document.setdefault("method", {})
    method.setdefault("potential", potential_of(method))
    method.setdefault("protocol", (method.get("parameters") or {}).get("protocol"))
    document["schema_version"] = 3
    return document


# UPGRADES[v] turns a version-v document into a version v+1 document.
UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2, 2: _v2_to_v3}


def upgrade_document(document: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``document`` brought to :data:`SCHEMA_VERSION` (unchanged if current).

    Raises
    ------
    RecordSchemaError
        If the document has no integer ``schema_version``, or one with no upgrade path.
    """
    version = document.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise RecordSchemaError(f"schema_version: expected an integer, got {version!r}")
    if version == SCHEMA_VERSION:
        return document
    if version > SCHEMA_VERSION or version not in UPGRADES:
        raise RecordSchemaError(
            f"schema_version: no upgrade from version {version}; this matdx reads versions "
            f"{min(UPGRADES)} to {SCHEMA_VERSION}"
        )
    upgraded = copy.deepcopy(document)
    while upgraded["schema_version"] < SCHEMA_VERSION:
        upgraded = UPGRADES[upgraded["schema_version"]](upgraded)
    return upgraded


def validate_document(document: Any, *, upgrade: bool = False) -> CalculationRecord:
    """Validate a record document against the current schema.

    Parameters
    ----------
    document
        A record as plain JSON data (e.g. ``CalculationRecord.model_dump(mode="json")``).
    upgrade
        Upgrade an older document first (for reading and importing); writes of new records
        leave it False, so that only current documents are written.

    Raises
    ------
    RecordSchemaError
        Naming every field that is wrong and why, e.g.
        ``governance.access: Input should be 'private', 'group', 'embargoed' or 'public'``.
    """
    if not isinstance(document, dict):
        raise RecordSchemaError(f"record: expected a JSON object, got {type(document).__name__}")
    if upgrade:
        document = upgrade_document(document)
    try:
        return CalculationRecord.model_validate(document)
    except ValidationError as err:
        problems = "; ".join(
            f"{field_path(problem['loc']) or 'record'}: {problem['msg']}"
            for problem in err.errors()
        )
        raise RecordSchemaError(f"record {document.get('record_id', '?')}: {problems}") from err
