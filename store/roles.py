"""People and projects of a PostgreSQL store: login roles and their memberships.

Each person is a login role (``NOSUPERUSER NOBYPASSRLS``, owning nothing) in
``matdx_users`` (may write their own campaigns) or, for a reader, ``matdx_readers`` only;
the administrator is a member of ``matdx_admin``; a project is the group role
``matdx_project_<name>`` (:data:`~matdx.store.identity.PROJECT_ROLE_PREFIX`) and its members
are its members. Migration 0006 creates the group roles and the row-level security policies
that judge every row by them. Managing roles needs a role with ``CREATEROLE`` (the store's
owner).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from psycopg import sql
from sqlalchemy import Engine, text

from matdx.store.identity import ADMIN_ROLE, PROJECT_ROLE_PREFIX

__all__ = [
    "ANONYMOUS_ROLE",
    "AUTHENTICATOR_ROLE",
    "RoleError",
    "StoreUser",
    "add_member",
    "add_user",
    "ensure_service_roles",
    "list_users",
    "person_role",
]

READERS_ROLE = "matdx_readers"
USERS_ROLE = "matdx_users"
#: The web service's login role: it owns nothing and inherits nothing (NOINHERIT); it may
#: read the API tokens and switch, per transaction, to a person's role or the anonymous one.
AUTHENTICATOR_ROLE = "matdx_authenticator"
#: What a request without a token acts as: a reader that owns nothing and is in no project.
ANONYMOUS_ROLE = "matdx_anonymous"
# A role name is at most 63 bytes; a project's role adds its prefix.
USER_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
PROJECT_NAME = re.compile(rf"^[A-Za-z0-9_][A-Za-z0-9_.-]{{0,{62 - len(PROJECT_ROLE_PREFIX)}}}$")


class RoleError(ValueError):
    """A user or project name, or a change of roles, that cannot be made."""


@dataclass(frozen=True)
class StoreUser:
    """A person's role: ``kind`` ``user`` or ``reader``, administrator or not, projects."""

    name: str
    kind: str
    admin: bool
    projects: tuple[str, ...]


def _require_postgresql(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        raise RoleError(
            "users and projects are PostgreSQL roles; a SQLite store has one user, the "
            "account running matdx (share a store on PostgreSQL, see README 'The shared store')"
        )


def _check(pattern: re.Pattern[str], value: str, field: str, rule: str) -> None:
    if not pattern.match(value):
        raise RoleError(f"{field}: {value!r} is not a valid name ({rule})")


def _run(engine: Engine, statements: list[sql.Composable]) -> None:
    """Run role statements in one transaction; a missing privilege becomes a RoleError."""
    import psycopg

    with engine.begin() as connection:
        driver = connection.connection.driver_connection
        try:
            with driver.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement)
        except psycopg.errors.InsufficientPrivilege as err:
            raise RoleError(
                f"{err.diag.message_primary}: managing users and projects needs the store's "
                "owner (a role with CREATEROLE)"
            ) from None


def _exists(engine: Engine, role: str) -> bool:
    with engine.connect() as connection:
        return bool(
            connection.execute(
                text("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :r)"), {"r": role}
            ).scalar()
        )


def add_user(
    engine: Engine,
    name: str,
    *,
    password: str | None = None,
    reader: bool = False,
    admin: bool = False,
) -> StoreUser:
    """Create a person's login role.

    Parameters
    ----------
    name
        The role name: lowercase letters, digits and ``_``, up to 63 characters.
    password
        Its password (else authentication by ``~/.pgpass``, certificate or the server's
        rules).
    reader
        Read only (``matdx_readers``), e.g. an anonymous reader role.
    admin
        Also a member of the administrator role.

    Raises
    ------
    RoleError
        On SQLite, for an invalid or existing name, or without the privilege.
    """
    _require_postgresql(engine)
    _check(USER_NAME, name, "user", "lowercase letters, digits, _; at most 63")
    if reader and admin:
        raise RoleError("user: a reader cannot be an administrator")
    if _exists(engine, name):
        raise RoleError(f"user: a role {name!r} exists already; nothing changed")
    group = READERS_ROLE if reader else USERS_ROLE
    create = sql.SQL(
        "CREATE ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE INHERIT"
    ).format(sql.Identifier(name))
    if password is not None:
        create = sql.SQL("{} PASSWORD {}").format(create, sql.Literal(password))
    statements: list[sql.Composable] = [
        create,
        sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(name)),
    ]
    if admin:
        statements.append(
            sql.SQL("GRANT {} TO {}").format(sql.Identifier(ADMIN_ROLE), sql.Identifier(name))
        )
    if _exists(engine, AUTHENTICATOR_ROLE):  # the web service may act as the new person
        statements.append(
            sql.SQL("GRANT {} TO {}").format(
                sql.Identifier(name), sql.Identifier(AUTHENTICATOR_ROLE)
            )
        )
    _run(engine, statements)
    return StoreUser(name, "reader" if reader else "user", admin, ())


def add_member(engine: Engine, project: str, user: str) -> None:
    """Make ``user`` a member of ``project`` (its role is created if it is the first).

    Raises
    ------
    RoleError
        On SQLite, for an invalid project name, an unknown user, or without the privilege.
    """
    _require_postgresql(engine)
    longest = 63 - len(PROJECT_ROLE_PREFIX)
    _check(PROJECT_NAME, project, "project", f"letters, digits, _ . -; at most {longest}")
    if user not in {u.name for u in list_users(engine)}:
        raise RoleError(f"user: {user!r} is not a matdx user (add it with `matdx users add`)")
    role = PROJECT_ROLE_PREFIX + project
    statements: list[sql.Composable] = []
    if not _exists(engine, role):
        statements.append(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
    statements.append(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(user)))
    _run(engine, statements)


def list_users(engine: Engine) -> list[StoreUser]:
    """Every person's role (members of ``matdx_readers``, hence of ``matdx_users`` too), by
    name, with their projects."""
    _require_postgresql(engine)
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT r.rolname,"
                " pg_has_role(r.oid, :users, 'MEMBER'),"
                " pg_has_role(r.oid, :admin, 'MEMBER'),"
                " ARRAY(SELECT substr(p.rolname, length(:prefix) + 1) FROM pg_roles p"
                "  WHERE starts_with(p.rolname, :prefix) AND pg_has_role(r.oid, p.oid, 'MEMBER')"
                "  ORDER BY 1)"
                " FROM pg_roles r"
                " WHERE r.rolcanlogin AND NOT r.rolsuper AND NOT r.rolbypassrls"
                " AND pg_has_role(r.oid, :readers, 'MEMBER')"
                " ORDER BY r.rolname"
            ),
            {
                "users": USERS_ROLE,
                "admin": ADMIN_ROLE,
                "readers": READERS_ROLE,
                "prefix": PROJECT_ROLE_PREFIX,
            },
        ).all()
    return [
        StoreUser(name, "user" if user else "reader", bool(admin), tuple(projects))
        for name, user, admin, projects in rows
    ]


def ensure_service_roles(engine: Engine, *, password: str | None = None) -> None:
    """Create or complete the web service's roles; running it again changes nothing.

    :data:`ANONYMOUS_ROLE` (``NOLOGIN``, a reader) and :data:`AUTHENTICATOR_ROLE` (``LOGIN
    NOINHERIT BYPASSRLS``), which is granted every person's role and the anonymous one, so
    that it can ``SET ROLE`` to them, and ``SELECT`` on ``api_tokens`` (no policy lets anyone
    but the owner read that table, hence ``BYPASSRLS``) and ``alembic_version``, and nothing
    else: without a ``SET ROLE`` it can read no record; after one, the person's own role is
    judged by row-level security.

    Parameters
    ----------
    password
        The authenticator's password (set or changed), for the service's connection URL.

    Raises
    ------
    RoleError
        On SQLite, or without the privilege (a ``BYPASSRLS`` role needs a superuser).
    """
    _require_postgresql(engine)
    authenticator, anonymous = sql.Identifier(AUTHENTICATOR_ROLE), sql.Identifier(ANONYMOUS_ROLE)
    statements: list[sql.Composable] = []
    if not _exists(engine, ANONYMOUS_ROLE):
        statements.append(sql.SQL("CREATE ROLE {} NOLOGIN").format(anonymous))
    statements.append(sql.SQL("ALTER ROLE {} NOLOGIN INHERIT").format(anonymous))
    statements.append(sql.SQL("GRANT {} TO {}").format(sql.Identifier(READERS_ROLE), anonymous))
    attributes = sql.SQL("LOGIN NOINHERIT NOSUPERUSER BYPASSRLS NOCREATEDB NOCREATEROLE")
    if password is not None:
        attributes = sql.SQL("{} PASSWORD {}").format(attributes, sql.Literal(password))
    verb = "ALTER" if _exists(engine, AUTHENTICATOR_ROLE) else "CREATE"
    statements.append(sql.SQL(verb + " ROLE {} {}").format(authenticator, attributes))
    for table in ("api_tokens", "alembic_version"):
        statements.append(
            sql.SQL("GRANT SELECT ON {} TO {}").format(sql.Identifier(table), authenticator)
        )
    for role in [ANONYMOUS_ROLE, *(user.name for user in list_users(engine))]:
        statements.append(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), authenticator))
    _run(engine, statements)


def person_role(engine_or_connection: Any, name: str) -> StoreUser | None:
    """``name``'s role if it is a person's (a login role in ``matdx_readers``, neither
    superuser nor ``BYPASSRLS``), else None: the only roles the web service acts as."""
    rows = engine_or_connection.execute(
        text(
            "SELECT pg_has_role(r.oid, :users, 'MEMBER'),"
            " pg_has_role(r.oid, :admin, 'MEMBER'),"
            " ARRAY(SELECT substr(p.rolname, length(:prefix) + 1) FROM pg_roles p"
            "  WHERE starts_with(p.rolname, :prefix) AND pg_has_role(r.oid, p.oid, 'MEMBER')"
            "  ORDER BY 1)"
            " FROM pg_roles r"
            " WHERE r.rolname = :name AND r.rolcanlogin AND NOT r.rolsuper"
            " AND NOT r.rolbypassrls AND pg_has_role(r.oid, :readers, 'MEMBER')"
        ),
        {
            "name": name,
            "users": USERS_ROLE,
            "admin": ADMIN_ROLE,
            "readers": READERS_ROLE,
            "prefix": PROJECT_ROLE_PREFIX,
        },
    ).first()
    if rows is None:
        return None
    user, admin, projects = rows
    return StoreUser(name, "user" if user else "reader", bool(admin), tuple(projects))
