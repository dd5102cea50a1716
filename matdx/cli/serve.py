"""``matdx serve`` (the web service) and ``matdx tokens create/list/revoke``.

Tokens are made for the identity the command line runs as (on SQLite: the OS account that
owns the store); the secret is printed once and only its sha256 is stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from matdx.cli.options import Home
from matdx.cli.tables import console

if TYPE_CHECKING:
    from matdx.store.store import Store

tokens_app = typer.Typer(help="API tokens for the web service.", no_args_is_help=True)


def _store(home: Path | None) -> Store:
    from matdx.client import default_home
    from matdx.store.store import Store

    return Store(home if home is not None else default_home())


def serve(
    home: Home = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port", min=1, max=65535)] = 8000,
    max_page: Annotated[int, typer.Option(help="largest page a client may ask for", min=1)] = 1000,
    max_body: Annotated[int, typer.Option(help="largest request body, bytes", min=1024)] = 1 << 20,
    rate: Annotated[
        int, typer.Option(help="requests per minute per token or address (0: no limit)", min=0)
    ] = 600,
    base_url: Annotated[
        str | None, typer.Option(help="public URL of the service behind a reverse proxy")
    ] = None,
) -> None:
    """Serve the store over HTTP: REST, OPTIMADE at /optimade/v1, OpenAPI at /docs.

    Stops gracefully on SIGINT/SIGTERM: requests in flight finish (up to 10 s), then the
    process ends with the signal's status, as uvicorn re-raises it.
    """
    import logging
    import sys

    import uvicorn

    from matdx.api.app import create_app
    from matdx.api.settings import ServiceSettings

    settings = ServiceSettings(
        max_page=max_page, max_body_bytes=max_body, rate_per_minute=rate, base_url=base_url
    )
    store = _store(home)
    access = logging.getLogger("matdx.api")  # and its child matdx.api.access
    access.setLevel(logging.INFO)
    if not access.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(handler)
    console.print(
        f"serving {store.display_url} on http://{host}:{port}  (OPTIMADE: /optimade/v1, "
        "API docs: /docs)"
    )
    uvicorn.run(
        create_app(store, settings),
        host=host,
        port=port,
        access_log=False,  # matdx.api.access writes structured lines instead
        timeout_graceful_shutdown=10,
        log_level="warning",
    )


@tokens_app.command("create")
def tokens_create(
    name: Annotated[str, typer.Option(help="what the token is for (shown in lists)")],
    days: Annotated[float, typer.Option(help="lifetime in days")] = 90.0,
    home: Home = None,
) -> None:
    """Create a token for yourself; the secret is printed once."""
    from matdx.store.access import Requester
    from matdx.store.tokens import issue_token

    store = _store(home)
    with store.transaction() as session:
        issued = issue_token(session, Requester.from_environment(), name=name, lifetime_days=days)
    console.print(
        f"token {issued.id} for {issued.user}, expires {issued.expires_at:%Y-%m-%d %H:%M} UTC"
    )
    print(issued.text)  # plain, so that scripts can capture it


@tokens_app.command("list")
def tokens_list(home: Home = None) -> None:
    """Your tokens (never their secrets)."""
    from matdx.cli.tables import rows_table
    from matdx.store.access import Requester
    from matdx.store.tokens import list_tokens

    store = _store(home)
    with store.transaction() as session:
        rows = list_tokens(session, Requester.from_environment())
    for row in rows:
        for key in ("created_at", "expires_at", "revoked_at"):
            row[key] = f"{row[key]:%Y-%m-%d %H:%M}" if row[key] else ""
        row["groups"] = ",".join(row["groups"])
    console.print(rows_table(rows, title="API tokens"))


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: Annotated[str, typer.Argument(help="token id")], home: Home = None
) -> None:
    """Revoke one of your tokens."""
    from matdx.store.access import Requester
    from matdx.store.tokens import revoke_token

    store = _store(home)
    with store.transaction() as session:
        revoke_token(session, Requester.from_environment(), token_id)
    console.print(f"token {token_id} revoked")


def register(app: typer.Typer) -> None:
    """Add ``serve`` and ``tokens`` to the main app."""
    app.command("serve")(serve)
    app.add_typer(tokens_app, name="tokens")
