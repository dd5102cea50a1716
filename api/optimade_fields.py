"""The OPTIMADE ``structures`` fields this service serves, and the SQL each one reads.

Fields come from the store's indexed columns and side tables where they exist (``nsites``,
``chemical_formula_reduced``, ``record_elements`` for ``elements``, ``record_properties`` for
results), and otherwise from the record document's JSON (``chemical_formula_anonymous``,
``nperiodic_dimensions``, ...). matdx's own fields carry the ``_matdx_`` prefix and their units
(:data:`matdx.store.export_optimade.PROVIDER_FIELDS`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import ColumnElement, func, literal, select

from matdx.store.export_optimade import PREFIX, PROVIDER_FIELDS
from matdx.store.models import Record, RecordElement

__all__ = ["FIELDS", "Field", "method_label_column", "nelements_column"]

Kind = Literal["string", "integer", "float", "boolean", "timestamp", "list", "dictionary"]


def nelements_column() -> ColumnElement[int]:
    """The number of elements of each record, counted in ``record_elements``."""
    return (
        select(func.count())
        .where(RecordElement.record_id == Record.record_id)
        .correlate(Record)
        .scalar_subquery()
    )


def _document(*path: str, kind: Kind) -> Any:
    value = Record.document[path]
    return {
        "string": value.as_string,
        "integer": value.as_integer,
        "float": value.as_float,
        "boolean": value.as_boolean,
    }[kind]()


@dataclass(frozen=True)
class Field:
    """One served field.

    Attributes
    ----------
    kind
        The OPTIMADE type.
    description
        For ``info/structures``.
    column
        A callable giving the SQL value of a scalar field (None: not comparable in SQL).
    property_name
        For results indexed in ``record_properties``: the property's name there.
    path
        Where a list or dictionary field is in the record document (``("system", "elements")``).
    member
        The kind of a list's members: ``string``, ``float``, ``integer``, ``vector`` (lists of
        3-vectors) or ``dictionary``.
    unit
        Unit of a physical quantity.
    sortable
        ``sort`` accepts it (scalar fields with a column).
    """

    kind: Kind
    description: str
    column: Any = None
    property_name: str | None = None
    path: tuple[str, ...] | None = None
    member: str | None = None
    unit: str | None = None

    @property
    def sortable(self) -> bool:
        return self.column is not None


_STANDARD: dict[str, Field] = {
    "id": Field("string", "the matdx record id", lambda: Record.record_id),
    "type": Field("string", "always 'structures'"),
    "immutable_id": Field(
        "string", "the matdx record id (records never change)", lambda: Record.record_id
    ),
    "last_modified": Field(
        "timestamp", "when the record was stored (records are immutable)", lambda: Record.created_at
    ),
    "elements": Field(
        "list",
        "chemical symbols of the elements, alphabetical",
        path=("system", "elements"),
        member="string",
    ),
    "nelements": Field("integer", "number of distinct elements", nelements_column),
    "elements_ratios": Field(
        "list",
        "fraction of the sites of each element",
        path=("system", "elements_ratios"),
        member="float",
    ),
    "chemical_formula_reduced": Field(
        "string", "reduced formula, elements alphabetical", lambda: Record.chemical_formula_reduced
    ),
    "chemical_formula_hill": Field(
        "string",
        "Hill formula of the cell",
        lambda: _document("system", "chemical_formula_hill", kind="string"),
    ),
    "chemical_formula_anonymous": Field(
        "string",
        "anonymous formula (A2B, ...)",
        lambda: _document("system", "chemical_formula_anonymous", kind="string"),
    ),
    "dimension_types": Field(
        "list",
        "periodicity along each lattice vector (0 or 1)",
        path=("system", "dimension_types"),
        member="integer",
    ),
    "nperiodic_dimensions": Field(
        "integer",
        "number of periodic dimensions",
        lambda: _document("system", "nperiodic_dimensions", kind="integer"),
    ),
    "lattice_vectors": Field(
        "list",
        "lattice vectors (3, 3), Å",
        path=("system", "lattice_vectors"),
        member="vector",
        unit="Å",
    ),
    "cartesian_site_positions": Field(
        "list",
        "site positions (nsites, 3), Å",
        path=("system", "cartesian_site_positions"),
        member="vector",
        unit="Å",
    ),
    "nsites": Field("integer", "number of sites", lambda: Record.nsites),
    "species": Field(
        "list",
        "species of the sites (one per element)",
        path=("system", "species"),
        member="dictionary",
    ),
    "species_at_sites": Field(
        "list",
        "species name of each site",
        path=("system", "species_at_sites"),
        member="string",
    ),
    "structure_features": Field("list", "always empty: ordered, explicit-atom crystals"),
}

# Provider fields: the SQL of those that queries may filter and sort on.
_PROVIDER_COLUMNS: dict[str, Any] = {
    "schema_version": lambda: Record.schema_version,
    "campaign_id": lambda: Record.campaign_id,
    "input_hash": lambda: Record.input_hash,
    "structure_hash": lambda: Record.structure_hash,
    "license": lambda: Record.license,
    "code": lambda: Record.code,
    "calculation": lambda: Record.calculation,
    "energy": lambda: Record.energy,
    "energy_per_atom": lambda: Record.energy_per_atom,
    "code_version": lambda: _document("method", "code_version", kind="string"),
    "functional": lambda: _document("method", "functional", kind="string"),
    "converged": lambda: _document("results", "converged", kind="boolean"),
    "potential": lambda: Record.potential,
    "protocol": lambda: _document("method", "protocol", kind="string"),
    "method": lambda: method_label_column(),
}
_INDEXED_PROPERTIES = ("band_gap", "fermi_level", "total_magnetization")
# Provider lists and dictionaries: where they are in the document and what their members are.
_PROVIDER_PATHS: dict[str, tuple[tuple[str, ...], str]] = {
    "pseudopotentials": (("method", "pseudopotentials"), "dictionary"),
    "forces": (("results", "forces"), "vector"),
    "stress": (("results", "stress"), "vector"),
    "magnetic_moments": (("results", "magnetic_moments"), "float"),
    "properties": (("results", "properties"), "dictionary"),
}


def method_label_column() -> ColumnElement[str]:
    """:func:`matdx.store.records.method_label` in SQL: code | functional | potential |
    protocol, the parts that are set, or NULL when none is (both backends: no concat_ws in
    SQLite 3.40)."""
    parts = (
        Record.code,
        Record.functional,
        Record.potential,
        _document("method", "protocol", kind="string"),
    )
    joined = literal("")
    for part in parts:
        joined = joined + func.coalesce(literal(" | ") + func.nullif(part, ""), "")
    return func.nullif(func.substr(joined, 4), "")


def _provider_fields() -> dict[str, Field]:
    fields = {}
    for name, (kind, unit, description) in PROVIDER_FIELDS.items():
        fields[PREFIX + name] = Field(
            kind,  # type: ignore[arg-type]
            description,
            column=_PROVIDER_COLUMNS.get(name),
            property_name=name if name in _INDEXED_PROPERTIES else None,
            path=_PROVIDER_PATHS[name][0] if name in _PROVIDER_PATHS else None,
            member=_PROVIDER_PATHS[name][1] if name in _PROVIDER_PATHS else None,
            unit=unit,
        )
    return fields


FIELDS: dict[str, Field] = {**_STANDARD, **_provider_fields()}
