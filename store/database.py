"""Database engines: SQLite (embedded default) and, by URL, other SQLAlchemy backends."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

__all__ = ["create_store_engine", "sqlite_path"]

SQLITE_BUSY_TIMEOUT_MS = 60_000


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL, or None for other backends."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    if not parsed.database or parsed.database == ":memory:":
        raise ValueError(f"store URL: an in-memory SQLite store cannot be shared: {url!r}")
    return Path(parsed.database)


def create_store_engine(url: str) -> Engine:
    """Create the engine for a store URL.

    SQLite runs in WAL mode so that readers (``matdx status``) never block the tick, with
    ``synchronous=NORMAL`` (a commit survives a killed process; only an OS crash may lose the
    last commits) and a long busy timeout so that a CLI command and a tick queue up instead of
    failing with "database is locked".
    """
    if sqlite_path(url) is None:
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite would defer it).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        # BEGIN IMMEDIATE takes the write lock up front: two writers queue on busy_timeout
        # instead of one failing when it upgrades a read lock (SQLITE_BUSY without retry).
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
