"""Who the user is: proven by the system, never declared.

SQLite is the embedded single-user store: its user is the operating-system account that runs
matdx, and its file must belong to that account (a store file of another account is refused:
several people share a store on PostgreSQL, each connecting as their own database role).
``--user`` and ``$MATDX_USER`` cannot claim another name there; naming oneself is accepted.
The one user of a SQLite store is its administrator.

PostgreSQL is the shared store: each person connects as their own login role (password,
``~/.pgpass`` or certificate), and that role is the user; the projects are the
``matdx_project_<name>`` roles it is a member of, and administrator rights (``--admin``) need
membership in :data:`ADMIN_ROLE` (:mod:`matdx.store.roles` manages them). Row-level security
(migration 0006) enforces the access table on the role itself, so a name claimed through
``--user`` or ``$MATDX_USER`` is refused, and could give no access anyway.

The one exception is the store's owner (the role that owns the tables, a superuser, or a
role with BYPASSRLS): it reads every row whatever it claims, so it may act for others (the web
service acts for the holders of its tokens; maintenance scripts), with a declared name and
projects as before.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, text

from matdx.store.access import GROUPS_VARIABLE, USER_VARIABLE, Requester

__all__ = [
    "ADMIN_ROLE",
    "ConnectedRole",
    "ForeignStore",
    "IdentityError",
    "check_store_file",
    "connected_role",
    "identify",
    "os_account",
]

ADMIN_ROLE = "matdx_admin"
#: A project is the database role of this prefix and its name; its members are its members.
PROJECT_ROLE_PREFIX = "matdx_project_"
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


@dataclass(frozen=True)
class ConnectedRole:
    """The role a PostgreSQL connection authenticated as.

    ``sees_everything``: the store's owner, a superuser or a BYPASSRLS role, which row-level
    security does not restrict. ``projects``: the projects the role is a member of.
    """

    name: str
    sees_everything: bool
    admin: bool
    projects: frozenset[str]


def connected_role(engine: Engine) -> ConnectedRole:
    """Who a PostgreSQL engine's connections are (see :class:`ConnectedRole`)."""
    with engine.connect() as connection:
        row = connection.execute(
            text(
                "SELECT r.rolname, r.rolsuper OR r.rolbypassrls OR EXISTS ("
                "  SELECT 1 FROM pg_tables t WHERE t.tablename = 'records'"
                "  AND t.schemaname = current_schema() AND t.tableowner = current_user),"
                " EXISTS (SELECT 1 FROM pg_roles a WHERE a.rolname = :admin"
                "  AND pg_has_role(current_user, a.oid, 'MEMBER')),"
                " ARRAY(SELECT substr(p.rolname, length(:prefix) + 1) FROM pg_roles p"
                "  WHERE starts_with(p.rolname, :prefix)"
                "  AND pg_has_role(current_user, p.oid, 'MEMBER'))"
                " FROM pg_roles r WHERE r.rolname = current_user"
            ),
            {"admin": ADMIN_ROLE, "prefix": PROJECT_ROLE_PREFIX},
        ).one()
    return ConnectedRole(row[0], bool(row[1]), bool(row[2]), frozenset(row[3]))


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
        the authenticated one (or, on PostgreSQL, when the store's owner acts for someone).
    groups
        The projects to read as: on SQLite and for the store's owner ``groups`` or
        ``$MATDX_GROUPS``; a PostgreSQL user's projects are its role memberships.
    admin
        Act as administrator: the one user of a SQLite store; on PostgreSQL a member of
        :data:`ADMIN_ROLE`.

    Raises
    ------
    IdentityError
        If ``user`` names someone else, or ``admin`` is asked without the right.
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
    role = connected_role(engine)
    if admin and not role.admin:
        raise IdentityError(
            f"--admin: role {role.name!r} is not a member of the administrator role {ADMIN_ROLE!r}"
        )
    if role.sees_everything:
        return Requester(claimed or role.name, _groups(groups), admin=admin)
    if claimed is not None and claimed != role.name:
        raise IdentityError(
            f"--user/${USER_VARIABLE} {claimed!r}: on PostgreSQL the user is the database role "
            f"you connect as ({role.name!r}); to act as {claimed!r}, connect as that role"
        )
    return Requester(role.name, role.projects, admin=admin)
