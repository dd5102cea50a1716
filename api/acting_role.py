"""The database role a request acts as (PostgreSQL): the pattern PostgREST uses.

The service connects as :data:`~matdx.store.roles.AUTHENTICATOR_ROLE`, which owns nothing and
inherits nothing. For each transaction of a request it runs ``SET LOCAL ROLE`` to the role its
token proves (a person's login role) or to :data:`~matdx.store.roles.ANONYMOUS_ROLE`, so that
row-level security judges every row a request reads or writes, whatever the Python code
filters. ``SET LOCAL`` ends with the transaction: a pooled connection never keeps a person's
role.

On SQLite (one account's store) there are no roles and nothing is switched.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.orm import Session

from matdx.store.access import Requester
from matdx.store.roles import ANONYMOUS_ROLE, person_role
from matdx.store.store import Store

__all__ = ["acting_as", "database_role", "switch_role", "token_requester", "transaction_as"]

# (engine, role) that transactions begun in this context switch to: for the workflow
# functions (submit, cancel, rerun) that open their own transactions on the store.
_ACTING: ContextVar[tuple[Any, str] | None] = ContextVar("matdx_acting_role", default=None)


def database_role(requester: Requester) -> str:
    """The role ``requester`` acts as: its user's, or the anonymous reader's."""
    return requester.user or ANONYMOUS_ROLE


def switch_role(connection: Any, role: str) -> None:
    """``SET LOCAL ROLE role`` on ``connection`` (a SQLAlchemy connection or session) until
    its transaction ends."""
    dialect = connection.bind.dialect if isinstance(connection, Session) else connection.dialect
    quoted = dialect.identifier_preparer.quote_identifier(role)
    connection.execute(text(f"SET LOCAL ROLE {quoted}"))


@event.listens_for(Session, "after_begin")
def _switch_on_begin(session: Session, _transaction: Any, connection: Any) -> None:
    acting = _ACTING.get()
    if acting is not None and connection.engine is acting[0]:
        switch_role(connection, acting[1])


@contextmanager
def acting_as(store: Store, requester: Requester) -> Iterator[None]:
    """Every transaction begun on ``store`` inside the block (in this thread's context) acts
    as ``requester``'s role; on SQLite, nothing changes."""
    if store.backend != "postgresql":
        yield
        return
    token = _ACTING.set((store.engine, database_role(requester)))
    try:
        yield
    finally:
        _ACTING.reset(token)


@contextmanager
def transaction_as(store: Store, requester: Requester) -> Iterator[Session]:
    """One transaction on ``store`` acting as ``requester``'s role (see the module)."""
    with store.transaction() as session:
        if store.backend == "postgresql":
            switch_role(session, database_role(requester))
        yield session


def token_requester(session: Session, claimed: Requester) -> Requester | None:
    """On PostgreSQL, the requester a token of ``claimed.user`` proves, as the database knows
    the role (its projects and administrator membership, whatever the token's row says); None
    when that name is not a person's role the service may act as (a superuser, the owner, a
    group, or a role not granted to the service's own). On SQLite, ``claimed`` itself."""
    if session.bind.dialect.name != "postgresql":
        return claimed
    person = person_role(session, claimed.user or "")
    if person is None:
        return None
    may_switch = text("SELECT pg_has_role(session_user, :name, 'MEMBER')")
    if not session.scalar(may_switch, {"name": person.name}):  # not granted to the service
        return None
    return Requester(person.name, frozenset(person.projects), admin=person.admin)
