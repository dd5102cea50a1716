"""Locks: the tick lock and claiming rows for work.

SQLite stores (one account's) take an ``flock`` on ``tick.lock`` beside the database: one tick
per store at a time. PostgreSQL stores take session-level advisory locks on a dedicated
connection: a person's tick, which row-level security limits to that person's campaigns,
holds the owner's key (:func:`owner_lock_key`) exclusively and the store's key
(:data:`TICK_LOCK_KEY`) shared, so two owners' ticks run side by side and two ticks of one
owner do not; a tick of the store's owner (which sees every campaign) holds the store's key
exclusively. Both kinds are released by the operating system or the server when the holder
dies, so a killed tick never leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Connection, Engine, Select, text
from sqlalchemy.orm import Session

__all__ = [
    "TICK_LOCK_KEY",
    "StoreBusy",
    "advisory_lock",
    "claim_rows",
    "file_lock",
    "owner_lock_key",
]

# The advisory-lock key of the tick: a fixed 63-bit number derived from a name. Advisory locks
# are per database, so one key serves every store on a server.
TICK_LOCK_KEY = int.from_bytes(hashlib.sha256(b"matdx.tick").digest()[:8], "big") >> 1
POLL_S = 0.05

SelectT = TypeVar("SelectT", bound=Select)


def owner_lock_key(owner: str) -> int:
    """The 63-bit advisory-lock key of the ticks of one owner (a database role)."""
    return int.from_bytes(hashlib.sha256(f"matdx.tick:{owner}".encode()).digest()[:8], "big") >> 1


class StoreBusy(RuntimeError):
    """Another process holds the store's tick lock."""


def _holder_text() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()}"


@contextmanager
def file_lock(path: str | Path, wait_s: float = 0.0, poll_s: float = POLL_S) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` for the duration of the block.

    Parameters
    ----------
    path
        Lock file, created if missing (its content is the holder's pid, for humans).
    wait_s
        How long to wait for the lock, in seconds, before raising.

    Raises
    ------
    StoreBusy
        If the lock is still held by another process after ``wait_s`` seconds.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = path.read_text().strip() or "another process"
                    raise StoreBusy(
                        f"another tick (pid {holder}) is working on this store"
                    ) from None
                time.sleep(poll_s)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)


@contextmanager
def advisory_lock(
    engine: Engine,
    key: int = TICK_LOCK_KEY,
    wait_s: float = 0.0,
    poll_s: float = POLL_S,
    *,
    shared_key: int | None = None,
) -> Iterator[None]:
    """Hold a PostgreSQL session-level advisory lock for the duration of the block.

    The lock lives on a dedicated connection that stays checked out of the pool until the
    block ends. That connection runs in autocommit, so holding the lock through a long tick
    keeps no transaction open (an idle-in-transaction session would hold back VACUUM). Its
    ``application_name`` names this process, so that a second tick can say who holds the
    lock. If the holder dies, the server ends its session and releases the lock.

    Parameters
    ----------
    engine
        A PostgreSQL engine.
    key
        The 64-bit lock key, held exclusively.
    shared_key
        A key held in shared mode first (the store's key under an owner's key), so that an
        exclusive holder of it excludes this lock and other shared holders do not.
    wait_s
        How long to wait for the lock, in seconds, before raising.

    Raises
    ------
    StoreBusy
        If another session still holds the lock after ``wait_s`` seconds.
    """
    connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        connection.execute(
            text("SELECT set_config('application_name', :name, false)"),
            {"name": f"matdx tick {_holder_text()}"[:63]},
        )
        deadline = time.monotonic() + wait_s
        wanted = [("pg_try_advisory_lock_shared", shared_key)] if shared_key is not None else []
        wanted.append(("pg_try_advisory_lock", key))
        held: list[tuple[str, int]] = []
        try:
            for function, wanted_key in wanted:
                _acquire(connection, function, wanted_key, deadline, poll_s)
                held.append((function, wanted_key))
            yield
        finally:
            for function, held_key in reversed(held):
                unlock = function.replace("pg_try_advisory_lock", "pg_advisory_unlock")
                connection.execute(text(f"SELECT {unlock}(:key)"), {"key": held_key})
    finally:
        connection.close()


def _acquire(
    connection: Connection, function: str, key: int, deadline: float, poll_s: float
) -> None:
    """Take one advisory lock (``function``: the try-lock to call), polling until ``deadline``."""
    while not connection.execute(text(f"SELECT {function}(:key)"), {"key": key}).scalar():
        if time.monotonic() >= deadline:
            holder = connection.execute(
                text(
                    "SELECT a.application_name FROM pg_locks l "
                    "JOIN pg_stat_activity a ON a.pid = l.pid "
                    "WHERE l.locktype = 'advisory' AND l.granted "
                    "AND l.database = (SELECT oid FROM pg_database "
                    "WHERE datname = current_database()) "
                    "AND (l.classid::bigint << 32 | l.objid::bigint) = :key"
                ),
                {"key": key},
            ).scalar()
            who = holder.removeprefix("matdx tick ") if holder else "another session"
            raise StoreBusy(f"another tick ({who}) is working on this store")
        time.sleep(poll_s)


def claim_rows(statement: SelectT, session: Session, *, of: object | None = None) -> SelectT:
    """Make a SELECT claim the rows it returns, so that concurrent claimers never share one.

    On PostgreSQL this adds ``FOR UPDATE SKIP LOCKED``: the selected rows are locked until the
    transaction ends, and a concurrent transaction running the same claim skips them instead
    of waiting. On SQLite it returns the statement unchanged: every store transaction starts
    with ``BEGIN IMMEDIATE`` (see :mod:`matdx.store.database`), so claimers are already
    serialised and no row-level lock exists or is needed.

    Parameters
    ----------
    statement
        A ``select()`` of the rows to claim (e.g. READY jobs ordered by position, limited).
    session
        The session (inside its transaction) the statement will run in.
    of
        The entity or table whose rows to lock when the SELECT joins several (``FOR UPDATE OF``).

    Examples
    --------
    >>> query = select(Job).where(Job.state == "READY").order_by(Job.position).limit(100)
    >>> jobs = session.scalars(claim_rows(query, session, of=Job)).all()  # doctest: +SKIP
    """
    if session.get_bind().dialect.name == "postgresql":
        return statement.with_for_update(skip_locked=True, of=of)
    return statement
