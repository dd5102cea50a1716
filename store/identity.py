"""Who the user is: proven by the system, never declared.

SQLite is the embedded single-user store: its user is the operating-system account that runs
matdx, and its file must belong to that account (a store file of another account is refused:
several people share a store on PostgreSQL, each connecting as their own database role).
``--user`` and ``$MATDX_USER`` cannot claim another name there; naming oneself is accepted.
The one user of a SQLite store is its administrator.

PostgreSQL is the shared store: administrator rights (``--admin``) need membership in the
database role :data:`ADMIN_ROLE`. The user name there is still the declared one (``--user``,
``$MATDX_USER``, else the connected role), until row-level security on the authenticated role
replaces it (ARCHITECTURE.md, "Store backends").
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import Engine, text

from matdx.store.access import GROUPS_VARIABLE, USER_VARIABLE, Requester

__all__ = [
    "ADMIN_ROLE",
    "ForeignStore",
    "IdentityError",
    "check_store_file",
    "identify",
    "os_account",
]

ADMIN_ROLE = "matdx_admin"
SHARING = (
    "a SQLite store is one account's; to share a store, put it on PostgreSQL "
    "(MATDX_STORE=postgresql://ROLE@HOST/DB, each person connecting as their own role, "
    "see README, 'The shared store')"
)


class IdentityError(PermissionError):
    """A user name or administrator right was claimed that authentication does not give."""


class ForeignStore(PermissionError):
    """A SQLite store file belongs to another operating-system account."""


def os_account() -> str:
    """The name of the operating-system account running this process (effective uid)."""
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # an account without a passwd entry (containers): its number
        return str(uid)


def check_store_file(path: Path) -> None:
    """Refuse a SQLite store file that another account owns.

    Raises
    ------
    ForeignStore
        If ``path`` exists and its owner is not the account running matdx.
    """
    if not path.exists():
        return
    owner = path.stat().st_uid
    if owner != os.geteuid():
        try:
            name = pwd.getpwuid(owner).pw_name
        except KeyError:
            name = str(owner)
        raise ForeignStore(
            f"{path} belongs to account {name!r}, not to {os_account()!r}, who runs matdx: "
            f"{SHARING}"
        )


def _declared(user: str | None) -> str | None:
    return user or os.environ.get(USER_VARIABLE) or None


def _groups(groups: Iterable[str] | None) -> frozenset[str]:
    if groups is None:
        groups = (g.strip() for g in os.environ.get(GROUPS_VARIABLE, "").split(","))
    return frozenset(g for g in groups if g)


def identify(
    engine: Engine,
    user: str | None = None,
    groups: Iterable[str] | None = None,
    *,
    admin: bool = False,
) -> Requester:
    """The authenticated user of a store, as a :class:`~matdx.store.access.Requester`.

    Parameters
    ----------
    user
        A name the user gives (``--user``), else ``$MATDX_USER``: accepted only when it is
        the authenticated one.
    groups
        The projects to read as (default ``$MATDX_GROUPS``).
    admin
        Act as administrator: the one user of a SQLite store; on PostgreSQL a member of
        :data:`ADMIN_ROLE`.

    Raises
    ------
    IdentityError
        If ``user`` names someone else on SQLite, or ``admin`` is asked without the right.
    """
    claimed = _declared(user)
    if engine.dialect.name == "sqlite":
        name = os_account()
        if claimed is not None and claimed != name:
            raise IdentityError(
                f"--user/${USER_VARIABLE} {claimed!r}: on a SQLite store the user is the "
                f"account running matdx ({name!r}) and cannot claim another identity; {SHARING}"
            )
        return Requester(name, _groups(groups), admin=admin)
    with engine.connect() as connection:
        role = connection.execute(text("SELECT current_user")).scalar_one()
        is_admin = connection.execute(
            text(
                "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :admin "
                "AND pg_has_role(current_user, oid, 'MEMBER'))"
            ),
            {"admin": ADMIN_ROLE},
        ).scalar_one()
    if admin and not is_admin:
        raise IdentityError(
            f"--admin: role {role!r} is not a member of the administrator role {ADMIN_ROLE!r}"
        )
    return Requester(claimed or role, _groups(groups), admin=admin)
