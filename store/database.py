"""Database engines: SQLite (the embedded default) and PostgreSQL (the shared store).

A store URL is either ``sqlite:///path/store.sqlite`` or ``postgresql://user@host:port/db``;
PostgreSQL URLs are driven by psycopg 3 (``postgresql+psycopg://``), whatever driver the URL
names or leaves out.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

__all__ = [
    "BACKENDS",
    "JSONText",
    "StoreURLError",
    "create_store_engine",
    "normalize_url",
    "safe_url",
    "sqlite_path",
]

SQLITE_BUSY_TIMEOUT_MS = 60_000
SQLITE_CACHE_KIB = 65_536
BACKENDS = ("sqlite", "postgresql")


class StoreURLError(ValueError):
    """A store URL names an unsupported backend or cannot be parsed."""


class JSONText(str):
    """A JSON document serialized already (e.g. by pydantic's ``model_dump_json``), written to
    JSON / JSONB columns as it is instead of being serialized again."""


def _serialize_json(value: Any) -> str:
    return value if isinstance(value, JSONText) else json.dumps(value)


def normalize_url(url: str) -> str:
    """The SQLAlchemy URL matdx connects with.

    ``postgresql://``, ``postgres://`` and ``postgresql+<any driver>://`` become
    ``postgresql+psycopg://`` (psycopg 3); SQLite URLs are returned unchanged.

    Raises
    ------
    StoreURLError
        If the URL cannot be parsed or names a backend other than SQLite or PostgreSQL.
    """
    text = url.strip()
    if text.startswith("postgres://"):  # libpq's short scheme, which SQLAlchemy rejects
        text = "postgresql://" + text[len("postgres://") :]
    try:
        parsed = make_url(text)
    except ArgumentError as err:
        raise StoreURLError(f"store URL: cannot parse {url!r}") from err
    backend = parsed.get_backend_name()
    if backend not in BACKENDS:
        raise StoreURLError(
            f"store URL: unsupported backend {backend!r} in {safe_url(text)!r}; "
            f"accepted: {', '.join(BACKENDS)}"
        )
    if backend == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def safe_url(url: str) -> str:
    """The URL with its password masked, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable URL>"


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL, or None for other backends."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    if not parsed.database or parsed.database == ":memory:":
        raise StoreURLError(f"store URL: an in-memory SQLite store cannot be shared: {url!r}")
    return Path(parsed.database)


def create_store_engine(url: str) -> Engine:
    """Create the engine for a (normalized) store URL.

    SQLite runs in WAL mode so that readers (``matdx status``) never block the tick, with
    ``synchronous=NORMAL`` (a commit survives a killed process; only an OS crash may lose the
    last commits) and a long busy timeout so that a CLI command and a tick queue up instead of
    failing with "database is locked".

    PostgreSQL runs at its default isolation, READ COMMITTED: one tick at a time is ensured by
    the advisory tick lock, and work that other processes may claim concurrently is claimed
    with ``FOR UPDATE SKIP LOCKED`` (:func:`matdx.store.lock.claim_rows`). ``pool_pre_ping``
    replaces connections the server closed while a long tick slept.
    """
    if sqlite_path(url) is None:
        return create_engine(url, pool_pre_ping=True, json_serializer=_serialize_json)
    engine = create_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        json_serializer=_serialize_json,
    )

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite would defer it).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # 64 MiB of page cache (the default is 2 MiB): inserts with random UUID keys and
        # queries touch index pages all over a store of 100,000 records.
        cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        # BEGIN IMMEDIATE takes the write lock up front: two writers queue on busy_timeout
        # instead of one failing when it upgrades a read lock (SQLITE_BUSY without retry).
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
