"""Discovery metadata of embargoed records for people outside them, on PostgreSQL.

Row-level security (migration 0006) can only hide whole rows: a role may not read the
``records`` row of a record under a running embargo that is not theirs or their project's,
because that row holds its results. What everyone may know of such a record (formula,
elements, calculation type, owner, project, date and embargo end, see
:data:`matdx.store.access.DISCOVERY_FIELDS`) is in the view ``record_discovery``, which
queries, ``show`` and identifier lookups read besides ``records`` whenever row-level security
applies to the session's role. On SQLite, and for the store's owner, ``records`` itself holds
every row and the access filter turns the hidden ones into discovery metadata.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Connection, DateTime, Integer, String, column, exists, select, table
from sqlalchemy.orm import Session

from matdx.store.access import discovery_view
from matdx.store.models import Record

__all__ = ["RECORD_DISCOVERY", "discovered_record", "discovery_document", "row_security_active"]

#: The view of migration 0006 (not part of the ORM's metadata: the migration makes it).
RECORD_DISCOVERY = table(
    "record_discovery",
    column("record_id", String),
    column("schema_version", Integer),
    column("chemical_formula_reduced", String),
    column("elements", String),
    column("calculation", String),
    column("owner", String),
    column("project", String),
    column("access", String),
    column("embargo_until", DateTime(timezone=True)),
    column("created_at", DateTime(timezone=True)),
    column("embargoed", Boolean),
)


def row_security_active(connection: Connection) -> bool:
    """Whether row-level security hides rows of ``records`` from the connection's current
    role (a person's PostgreSQL role, not the store's owner). Asked each time, not cached on
    the pooled connection: a request may switch roles (``SET LOCAL ROLE``) on it."""
    if connection.dialect.name != "postgresql":
        return False
    return bool(connection.exec_driver_sql("SELECT row_security_active('records')").scalar())


def discovery_document(row: Any) -> tuple[dict[str, Any], datetime | None]:
    """A ``record_discovery`` row as the parts of a record document that
    :func:`matdx.store.access.discovery_view` takes, and the record's date."""
    elements = [e for e in (row.elements or "").split(",") if e]
    document = {
        "record_id": row.record_id,
        "schema_version": row.schema_version,
        "system": {
            "chemical_formula_reduced": row.chemical_formula_reduced,
            "elements": elements,
            "nelements": len(elements),
        },
        "method": {"calculation": row.calculation},
        "governance": {
            "owner": row.owner,
            "project": row.project,
            "access": row.access,
            "embargo_until": row.embargo_until.isoformat() if row.embargo_until else None,
        },
    }
    return document, row.created_at


def discovered_record(session: Session, record_id: str) -> dict[str, Any] | None:
    """The discovery metadata (:func:`~matdx.store.access.discovery_view`) of a record the
    session's role may discover but not read (a running embargo, row-level security); None
    for any other record, and always on SQLite or for the store's owner."""
    if not row_security_active(session.connection()):
        return None
    view = RECORD_DISCOVERY.c
    row = session.execute(
        select(RECORD_DISCOVERY).where(
            view.record_id == record_id,
            view.embargoed.is_(True),
            ~exists().where(Record.record_id == view.record_id),
        )
    ).first()
    return None if row is None else discovery_view(*discovery_document(row))
