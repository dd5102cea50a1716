"""Records an outsider may discover but not read: under a running embargo (PostgreSQL).

Row-level security hides whole rows, so a request acting as an outsider's role does not see
an embargoed record in ``records`` at all; the database shows it its discovery metadata
through the view ``record_discovery`` (migration 0006). These functions read that view for
the rows ``records`` hides, so that ``/records`` lists, finds and fetches them as the access
table says (discovery metadata only). Criteria on anything but discovery metadata (sites,
code, tags, campaign, status, property ranges) never match such a record: filtering on them
would reveal what the embargo withholds.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from matdx.store.search import RecordQuery

__all__ = [
    "discoverable",
    "discovery_count",
    "discovery_document",
    "discovery_page",
    "discovery_summary",
]

_HIDDEN = (
    "FROM record_discovery d WHERE d.embargoed"
    " AND NOT EXISTS (SELECT 1 FROM records r WHERE r.record_id = d.record_id)"
)
_COLUMNS = (
    "d.record_id, d.schema_version, d.chemical_formula_reduced, d.elements, d.calculation,"
    " d.owner, d.project, d.access, d.embargo_until, d.created_at"
)


def _applies(session: Session) -> bool:
    return session.bind.dialect.name == "postgresql"


def _only_discovery_criteria(query: RecordQuery) -> bool:
    return not (
        query.nsites
        or query.code
        or query.functional
        or query.potential
        or query.tags
        or query.campaign_ids
        or query.properties
        or query.status
    )


def _conditions(query: RecordQuery) -> tuple[str, dict[str, Any]]:
    where: list[str] = []
    values: dict[str, Any] = {}
    for i, element in enumerate(query.elements or ()):
        where.append(f"strpos(d.elements, :e{i}) > 0")
        values[f"e{i}"] = f",{element},"
    if query.any_elements:
        where.append(
            "EXISTS (SELECT 1 FROM unnest(CAST(:any AS text[])) e"
            " WHERE strpos(d.elements, ',' || e || ',') > 0)"
        )
        values["any"] = list(query.any_elements)
    if query.only_elements:
        where.append(
            "NOT EXISTS (SELECT 1 FROM unnest(string_to_array(trim(BOTH ',' FROM d.elements),"
            " ',')) e WHERE e <> ALL (CAST(:only AS text[])))"
        )
        values["only"] = list(query.only_elements)
    for name, value in (("formula", query.formula), ("owner", query.owner)):
        if value is not None:
            column = "chemical_formula_reduced" if name == "formula" else name
            where.append(f"d.{column} = :{name}")
            values[name] = value
    for name, listed in (("calculation", query.calculation), ("access", query.access)):
        if listed:
            where.append(f"d.{name} = ANY (CAST(:{name} AS text[]))")
            values[name] = list(listed)
    return "".join(f" AND {w}" for w in where), values


def discovery_page(session: Session, query: RecordQuery) -> list[dict[str, Any]]:
    """Up to ``query.limit + 1`` rows (ordered by record id, after ``query.after``) that the
    session's role may discover but not read and that match ``query``; empty on SQLite,
    where the store's own search lists them."""
    if not _applies(session) or not _only_discovery_criteria(query):
        return []
    where, values = _conditions(query)
    if query.after is not None:
        where += " AND d.record_id > :after"
        values["after"] = query.after
    statement = f"SELECT {_COLUMNS} {_HIDDEN}{where} ORDER BY d.record_id LIMIT :limit"
    rows = session.execute(text(statement), {**values, "limit": query.limit + 1}).mappings()
    return [dict(row) for row in rows]


def discovery_count(session: Session, query: RecordQuery) -> int:
    """How many rows :func:`discovery_page` would list over all pages."""
    if not _applies(session) or not _only_discovery_criteria(query):
        return 0
    where, values = _conditions(query)
    return session.scalar(text(f"SELECT count(*) {_HIDDEN}{where}"), values) or 0


def discoverable(session: Session, record_id: str) -> dict[str, Any] | None:
    """The view's row of ``record_id`` if the session's role may discover it but not read
    it (PostgreSQL), else None."""
    if not _applies(session):
        return None
    row = (
        session.execute(
            text(f"SELECT {_COLUMNS} {_HIDDEN} AND d.record_id = :id"), {"id": record_id}
        )
        .mappings()
        .first()
    )
    return dict(row) if row is not None else None


def _elements(row: dict[str, Any]) -> list[str]:
    return [e for e in (row["elements"] or "").split(",") if e]


def discovery_summary(row: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """A summary item of ``/records`` for a discovery row: ``keys`` as the store's search
    returns them, discovery metadata filled in and the rest None."""
    known = {
        "record_id": row["record_id"],
        "formula": row["chemical_formula_reduced"],
        "elements": _elements(row),
        "calculation": row["calculation"],
        "owner": row["owner"],
        "access": row["access"],
        "created_at": row["created_at"],
        "embargo_until": row["embargo_until"],
    }
    item = {key: known.get(key) for key in keys}
    item["properties"] = {}
    return item


def discovery_document(row: dict[str, Any]) -> dict[str, Any]:
    """What an outsider gets of a record under a running embargo, shaped as
    :func:`matdx.store.access.discovery_view` shapes a document."""
    elements = _elements(row)
    return {
        "embargoed": True,
        "created_at": row["created_at"].isoformat(),
        "record_id": row["record_id"],
        "schema_version": row["schema_version"],
        "system": {
            "chemical_formula_reduced": row["chemical_formula_reduced"],
            "elements": elements,
            "nelements": len(elements),
        },
        "method": {"calculation": row["calculation"]},
        "governance": {
            "owner": row["owner"],
            "project": row["project"],
            "access": row["access"],
            "embargo_until": row["embargo_until"].isoformat(),
        },
    }
