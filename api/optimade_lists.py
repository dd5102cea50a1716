"""The list and dictionary fields of the record document in SQL, for OPTIMADE filters.

Lists without an index table of their own (``elements_ratios``, ``dimension_types``,
``_matdx_magnetic_moments``, ...) are read from the record's JSON document: one row per member
with its position (SQLite's ``json_each``, PostgreSQL's ``jsonb_array_elements_text WITH
ORDINALITY``), so that correlated filters (``elements:elements_ratios HAS "Si":>0.3``) join two
lists on the position. A field stored as JSON ``null`` (or absent) has no members and no length:
it is unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Float, and_, case, cast, func, literal
from sqlalchemy.dialects.postgresql import JSONB

from matdx.store.models import Record

__all__ = ["Members", "document_known", "is_array", "list_length", "members"]


@dataclass(frozen=True)
class Members:
    """The members of one list field of the record being filtered, as a table.

    Attributes
    ----------
    table
        The table-valued function to select from (correlated with ``records``).
    position
        The member's position in the list (the same for every list of a record).
    value
        The member's value (a number for numeric members, text for strings).
    """

    table: Any
    position: Any
    value: Any


def _json_path(path: tuple[str, ...]) -> str:
    return "$." + ".".join(path)


def _pg_array(path: tuple[str, ...]) -> Any:
    """The JSONB array at ``path``, or an empty array when it is null or absent."""
    value = Record.document[path]
    return case((func.jsonb_typeof(value) == "array", value), else_=cast(literal("[]"), JSONB))


def members(dialect: str, path: tuple[str, ...], member: str) -> Members:
    """The members of the list at ``path`` in each record's document."""
    if dialect == "sqlite":
        table = (
            func.json_each(Record.document, _json_path(path))
            .table_valued("key", "value", "type")
            .alias()
        )
        return Members(table, table.c.key, table.c.value)
    table = (
        func.jsonb_array_elements_text(_pg_array(path))
        .table_valued("value", with_ordinality="position")
        .render_derived()
    )
    value = cast(table.c.value, Float) if member in ("float", "integer") else table.c.value
    return Members(table, table.c.position, value)


def is_array(dialect: str, path: tuple[str, ...]) -> ColumnElement[bool]:
    """The document holds a list at ``path`` (not null, not absent)."""
    if dialect == "sqlite":
        return func.json_type(Record.document, _json_path(path)) == "array"
    return func.jsonb_typeof(Record.document[path]) == "array"


def list_length(dialect: str, path: tuple[str, ...]) -> ColumnElement[int]:
    """The number of members of the list at ``path``; NULL when there is no list."""
    if dialect == "sqlite":
        return case(
            (is_array(dialect, path), func.json_array_length(Record.document, _json_path(path)))
        )
    return case((is_array(dialect, path), func.jsonb_array_length(Record.document[path])))


def document_known(dialect: str, path: tuple[str, ...], member: str | None) -> ColumnElement[bool]:
    """The field at ``path`` has a value: a list (of any length), or a dictionary with at least
    one entry (an empty ``_matdx_properties`` is not served)."""
    if member == "dictionary" and path[-1] == "properties":
        if dialect == "sqlite":
            kind = func.json_type(Record.document, _json_path(path))
            text = func.json_extract(Record.document, _json_path(path))
            return and_(kind == "object", text != "{}")
        value = Record.document[path]
        return and_(func.jsonb_typeof(value) == "object", value != cast(literal("{}"), JSONB))
    return is_array(dialect, path)
