"""``matdx users`` and ``matdx projects``: people and projects of a PostgreSQL store
(:mod:`matdx.store.roles`). Run as the store's owner."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from matdx.cli.options import Format, Home, OutputFormat
from matdx.cli.tables import console, err_console, rows_table, rows_text

users_app = typer.Typer(help="People of a PostgreSQL store: login roles.", no_args_is_help=True)
projects_app = typer.Typer(
    help="Projects of a PostgreSQL store: group roles.", no_args_is_help=True
)


def _engine(home: Home) -> object:
    from matdx.client import Client

    return Client(home).store.engine


def _fail(error: Exception) -> None:
    err_console.print(f"error: {error}", markup=False, highlight=False)
    raise typer.Exit(2)


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="role name (lowercase letters, digits, _)")],
    reader: Annotated[bool, typer.Option("--reader", help="may only read")] = False,
    admin: Annotated[bool, typer.Option("--admin", help="also an administrator")] = False,
    password: Annotated[
        bool, typer.Option("--password", help="ask for a password (else ~/.pgpass, certificates)")
    ] = False,
    home: Home = None,
) -> None:
    """Create a person's login role (NOSUPERUSER NOBYPASSRLS, owning nothing)."""
    from matdx.store.roles import RoleError, add_user

    secret = (
        typer.prompt("password", hide_input=True, confirmation_prompt=True) if password else None
    )
    try:
        user = add_user(_engine(home), name, password=secret, reader=reader, admin=admin)
    except RoleError as error:
        _fail(error)
    console.print(
        f"added {user.kind} {user.name}" + (" (administrator)" if admin else ""),
        highlight=False,
        markup=False,
    )


@users_app.command("service")
def users_service(
    password: Annotated[
        bool, typer.Option("--password", help="ask for the authenticator's password")
    ] = False,
    home: Home = None,
) -> None:
    """Create or complete the web service's roles (run again after adding people by other
    means): the authenticator `matdx serve` connects as, and the anonymous reader."""
    from matdx.store.roles import (
        ANONYMOUS_ROLE,
        AUTHENTICATOR_ROLE,
        RoleError,
        ensure_service_roles,
    )

    secret = (
        typer.prompt("password", hide_input=True, confirmation_prompt=True) if password else None
    )
    try:
        ensure_service_roles(_engine(home), password=secret)
    except RoleError as error:
        _fail(error)
    console.print(
        f"service roles ready: connect `matdx serve` as {AUTHENTICATOR_ROLE} "
        f"(anonymous requests act as {ANONYMOUS_ROLE})",
        highlight=False,
        markup=False,
    )


@users_app.command("list")
def users_list(home: Home = None, fmt: Format = OutputFormat.table) -> None:
    """Every person's role, with their projects."""
    from matdx.store.roles import RoleError, list_users

    try:
        users = list_users(_engine(home))
    except RoleError as error:
        _fail(error)
    rows = [
        {"user": u.name, "kind": u.kind, "admin": u.admin, "projects": ", ".join(u.projects)}
        for u in users
    ]
    if fmt == OutputFormat.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    elif fmt == OutputFormat.csv:
        sys.stdout.write(rows_text(rows, "csv"))
    else:
        console.print(rows_table(rows, title=f"{len(rows)} user(s)"))


@projects_app.command("add-member")
def projects_add_member(
    project: Annotated[str, typer.Argument(help="project name")],
    user: Annotated[str, typer.Argument(help="a user's role name")],
    home: Home = None,
) -> None:
    """Make a user a member of a project (creating the project's role if needed)."""
    from matdx.store.roles import RoleError, add_member

    try:
        add_member(_engine(home), project, user)
    except RoleError as error:
        _fail(error)
    console.print(f"{user} is a member of project {project}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    """Add ``matdx users`` and ``matdx projects`` to the app."""
    app.add_typer(users_app, name="users")
    app.add_typer(projects_app, name="projects")
