"""Search columns and index rows of records, derived from the document on every insert.

A record's ``document`` is the single source of truth. Whenever records are inserted through a
store session, this module validates each document against the current schema (nothing is
written if one is invalid) and fills, from the document alone, the columns of ``records``
that queries filter on and the rows of ``record_elements``, ``record_tags`` and
``record_properties``. Writers therefore cannot let the indexes drift from the documents,
whatever columns they pass.

Both ways of inserting records through the ORM are covered: ``session.execute(insert(Record),
rows)`` (the harvest's bulk insert; :func:`install` hooks the store's sessions) and
``session.add(Record(...))`` (mapper events). Bulk inserts are written with COPY on
PostgreSQL and with one executemany per table on SQLite.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from sqlalchemy import JSON, Column, Connection, Table, event, insert
from sqlalchemy.engine import IteratorResult
from sqlalchemy.engine.result import SimpleResultMetaData
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.orm import Mapper, ORMExecuteState, Session, sessionmaker

from matdx.store.database import JSONText
from matdx.store.discovery import row_security_active
from matdx.store.models import Record, RecordElement, RecordProperty, RecordTag
from matdx.store.records import CalculationRecord, RecordSchemaError, validate_document

__all__ = ["INDEXED_RESULTS", "install", "record_columns", "record_index_rows", "scalar_properties"]

# Scalars of ``results`` indexed for range queries, besides every number in
# ``results.properties`` (whose names carry their units).
INDEXED_RESULTS = ("energy", "energy_per_atom", "band_gap", "fermi_level", "total_magnetization")
MAX_NAME = 100


def scalar_properties(record: CalculationRecord) -> dict[str, float]:
    """The record's indexed scalar results by name: finite numbers only, booleans excluded."""
    results = record.results
    named: dict[str, Any] = {name: getattr(results, name) for name in INDEXED_RESULTS}
    named.update(results.properties)
    return {
        name[:MAX_NAME]: float(value)
        for name, value in named.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }


def record_columns(record: CalculationRecord) -> dict[str, Any]:
    """The ``records`` columns that copy the document (all but ``output`` and ``created_at``)."""
    system, governance = record.system, record.governance
    return {
        "record_id": record.record_id,
        "schema_version": record.schema_version,
        "job_id": record.job_id,
        "attempt": record.attempt,
        "campaign_id": record.campaign_id,
        "workflow_id": record.workflow_id,
        "input_hash": record.input_hash,
        "status": record.run.status,
        "code": record.method.code,
        "calculation": record.method.calculation,
        "functional": (record.method.functional or "")[:100] or None,
        "potential": (record.method.potential or "")[:400] or None,
        "chemical_formula_reduced": system.chemical_formula_reduced if system else None,
        "elements": f",{','.join(system.elements)}," if system else None,
        "nsites": system.nsites if system else None,
        "energy": record.results.energy,
        "energy_per_atom": record.results.energy_per_atom,
        "structure_hash": system.structure_hash if system else None,
        "owner": governance.owner,
        "project": governance.project,
        "access": governance.access,
        "license": governance.license,
        "embargo_until": governance.embargo_until,
        "export_control": governance.export_control,
        # Serialized once, by pydantic; the engine writes JSONText as it is.
        "document": JSONText(record.model_dump_json()),
    }


def record_index_rows(record: CalculationRecord) -> dict[type, list[dict[str, Any]]]:
    """Rows of the side tables for one record, by model class; each row carries a copy of
    the record's governance (what row-level security tests on PostgreSQL)."""
    record_id = record.record_id
    governance = record.governance
    copied = {
        "record_id": record_id,
        "owner": governance.owner,
        "project": governance.project,
        "access": governance.access,
        "embargo_until": governance.embargo_until,
        "export_control": governance.export_control,
    }
    elements = sorted(set(record.system.elements)) if record.system else []
    return {
        RecordElement: [{"element": e, **copied} for e in elements],
        RecordTag: [{"tag": tag[:MAX_NAME], **copied} for tag in sorted(set(record.tags))],
        RecordProperty: [
            {"name": name, "value": value, **copied}
            for name, value in scalar_properties(record).items()
        ],
    }


def _validated(row: Mapping[str, Any]) -> CalculationRecord:
    if "document" not in row:
        raise RecordSchemaError("record: an insert into records needs its document")
    return validate_document(row["document"])


def _index_rows(records: list[CalculationRecord]) -> dict[Table, list[dict[str, Any]]]:
    tables: dict[Table, list[dict[str, Any]]] = {}
    for record in records:
        for model, rows in record_index_rows(record).items():
            tables.setdefault(model.__table__, []).extend(rows)
    return tables


def _copy_value(column: Column, value: Any) -> Any:
    if value is None or isinstance(value, JSONText):
        return value
    if isinstance(column.type, JSON):
        return json.dumps(value)
    return value


def _copy_rows(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """Write rows with PostgreSQL's COPY (several times faster than INSERT for big batches).

    Errors (e.g. a duplicate record) are raised as SQLAlchemy's, like an INSERT's would be.
    """
    import psycopg

    columns = list(table.columns)
    for row in rows:
        for column in columns:
            default = column.default
            if column.name not in row and default is not None:
                row[column.name] = default.arg(None) if default.is_callable else default.arg
    unknown = {key for row in rows for key in row} - {c.name for c in columns}
    if unknown:
        raise ArgumentError(f"{table.name}: unknown column(s) {sorted(unknown)}")
    statement = f"COPY {table.name} ({', '.join(c.name for c in columns)}) FROM STDIN"
    cursor = connection.connection.driver_connection.cursor()
    try:
        with cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row([_copy_value(c, row.get(c.name)) for c in columns])
    except psycopg.Error as err:
        raise DBAPIError.instance(statement, None, err, psycopg.Error) from err
    finally:
        cursor.close()


def _write(session: Session, records: list[CalculationRecord], rows: list[dict[str, Any]]) -> None:
    """Write record rows and their index rows in the session's transaction."""
    tables = {Record.__table__: rows, **_index_rows(records)}
    connection = session.connection()
    for table, table_rows in tables.items():
        if not table_rows:
            continue
        if connection.dialect.name == "postgresql" and not row_security_active(connection):
            _copy_rows(connection, table, table_rows)
        else:  # SQLite runs in process: a Core executemany is already cheap; PostgreSQL
            # refuses COPY into tables whose row-level security applies to the role
            connection.execute(insert(table), table_rows)


def _bulk_insert(state: ORMExecuteState) -> Any:
    """``session.execute(insert(Record), rows)``: validate, derive columns, write index rows."""
    mapper = state.bind_mapper
    if not (state.is_insert and mapper is not None and mapper.class_ is Record):
        return None
    parameters = state.parameters
    if not parameters:
        raise RecordSchemaError(
            "records: insert them as parameter rows (session.execute(insert(Record), rows)) so "
            "that each document is validated"
        )
    rows: list[Mapping[str, Any]] = parameters if isinstance(parameters, list) else [parameters]
    records = [_validated(row) for row in rows]
    _write(
        state.session,
        records,
        [{**row, **record_columns(record)} for row, record in zip(rows, records, strict=True)],
    )
    # The rows are written: answer the caller's execute() with an empty result instead of
    # letting the ORM run its own INSERT.
    return IteratorResult(SimpleResultMetaData([]), iter([]))


def install(sessions: sessionmaker[Session]) -> None:
    """Validate and index every record inserted through sessions made by ``sessions``."""
    event.listen(sessions, "do_orm_execute", _bulk_insert)


@event.listens_for(Record, "before_insert")
def _before_insert(_mapper: Mapper, _connection: Connection, target: Record) -> None:
    record = _validated({"document": target.document} if target.document is not None else {})
    for key, value in record_columns(record).items():
        setattr(target, key, value)
    target.document = record.model_dump(mode="json")  # a dict on the ORM object, as loaded


@event.listens_for(Record, "after_insert")
def _after_insert(_mapper: Mapper, connection: Connection, target: Record) -> None:
    for table, rows in _index_rows([validate_document(target.document)]).items():
        if rows:
            connection.execute(insert(table), rows)
