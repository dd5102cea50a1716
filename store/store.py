"""The store: a database of campaigns, jobs and records plus an artifact directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from matdx.store import indexing
from matdx.store import tokens as _tokens  # noqa: F401 (its table is part of every store)
from matdx.store.artifacts import ArtifactStore
from matdx.store.database import create_store_engine, normalize_url, safe_url, sqlite_path
from matdx.store.identity import check_store_file, connected_role
from matdx.store.lock import TICK_LOCK_KEY, advisory_lock, file_lock, owner_lock_key
from matdx.store.migrate import HEAD_REVISION, current_revision, upgrade

__all__ = ["STORE_URL_VARIABLE", "Store", "store_url"]

STORE_URL_VARIABLE = "MATDX_STORE"


def store_url(home: str | Path, url: str | None = None) -> str:
    """The database URL of a store: ``url``, else ``$MATDX_STORE``, else the SQLite file
    ``home/store.sqlite``; PostgreSQL URLs are normalized to psycopg 3."""
    chosen = url or os.environ.get(STORE_URL_VARIABLE) or None
    if chosen is None:
        return f"sqlite:///{Path(home).absolute() / 'store.sqlite'}"
    return normalize_url(chosen)


class Store:
    """Open (and if needed create or migrate) a store.

    Parameters
    ----------
    home
        The matdx home directory: artifacts go to ``home/objects``; the default database is
        ``home/store.sqlite``.
    url
        A database URL, ``sqlite:///…`` or ``postgresql://…``; defaults to ``$MATDX_STORE``,
        then to the SQLite file in ``home``.

    Examples
    --------
    >>> store = Store("matdx-data")  # doctest: +SKIP
    >>> with store.transaction() as session:  # doctest: +SKIP
    ...     session.execute(select(Job).where(Job.state == "READY"))
    """

    def __init__(self, home: str | Path, url: str | None = None) -> None:
        self.home = Path(home).absolute()
        self.url = store_url(self.home, url)
        self.database_file = sqlite_path(self.url)
        if self.database_file is not None:
            check_store_file(self.database_file)  # one account's store; sharing: PostgreSQL
            self.database_file.parent.mkdir(parents=True, exist_ok=True)
        self.engine = create_store_engine(self.url)
        self.artifacts = ArtifactStore(self.home / "objects")
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        indexing.install(self._sessions)  # every record insert is validated and indexed
        # PostgreSQL: the owner whose campaigns a running tick narrows its view to.
        self._tick_scope = ""
        if self.backend == "postgresql":
            event.listen(self.engine, "checkout", self._apply_tick_scope)
        self._migrate()

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    @property
    def display_url(self) -> str:
        """The database URL with any password masked."""
        return safe_url(self.url)

    def _migrate(self) -> None:
        if current_revision(self.engine) == HEAD_REVISION:
            return
        with self.tick_lock(wait_s=120):  # two first openers must not both create tables
            if current_revision(self.engine) != HEAD_REVISION:
                upgrade(self.engine)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session inside one transaction: committed on success, rolled back on error."""
        with self._sessions() as session, session.begin():
            yield session

    def _apply_tick_scope(self, dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        """Set ``matdx.tick_owner`` on a pooled connection when it differs from the scope."""
        if record.info.get("matdx.tick_owner", "") == self._tick_scope:
            return
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SELECT set_config('matdx.tick_owner', %s, false)", (self._tick_scope,))
        dbapi_connection.commit()
        record.info["matdx.tick_owner"] = self._tick_scope

    @contextmanager
    def tick_lock(self, wait_s: float = 0.0, *, own_campaigns: bool = False) -> Iterator[None]:
        """Hold the tick lock; raises :class:`~matdx.store.lock.StoreBusy`.

        SQLite: an ``flock`` on ``home/tick.lock`` (one tick per store). PostgreSQL:
        advisory locks held on a dedicated connection, so that ticks on different machines
        sharing the database exclude each other. A person's role holds its owner key (two
        owners' ticks run side by side) and, with ``own_campaigns`` (the tick), the store's
        connections see only that owner's campaigns, jobs and batches meanwhile (the
        ``matdx.tick_owner`` setting that the row-level security policies of migration 0006
        honour; the policies themselves forbid writing others'); cancel and rerun by a
        project member or an administrator leave it off. The store's owner ticks every
        campaign under the store-wide key (:mod:`matdx.store.lock`).
        """
        if self.backend == "postgresql":
            role = connected_role(self.engine)
            if role.sees_everything:
                with advisory_lock(self.engine, TICK_LOCK_KEY, wait_s=wait_s):
                    yield
                return
            with advisory_lock(
                self.engine, owner_lock_key(role.name), wait_s=wait_s, shared_key=TICK_LOCK_KEY
            ):
                self._tick_scope = role.name if own_campaigns else ""
                try:
                    yield
                finally:
                    self._tick_scope = ""
        else:
            with file_lock(self.home / "tick.lock", wait_s=wait_s):
                yield

    def dispose(self) -> None:
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Store({str(self.home)!r}, backend={self.backend!r}, pid={os.getpid()})"
