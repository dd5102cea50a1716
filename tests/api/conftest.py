"""Fixtures of the web-service tests: a store of the test's backend and an HTTP client of the
application over it (in process; the slow tests start a real uvicorn server)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from matdx.store.access import Requester
from matdx.store.store import Store
from tests.conftest import matdx_cli, wait_for


@pytest.fixture
def store(home: Path) -> Iterator[Store]:
    made = Store(home)
    yield made
    made.dispose()


@pytest.fixture
def service_store(store: Store) -> Iterator[Store]:
    """The store as the service opens it: on PostgreSQL connected as the authenticator role
    (which reads nothing itself and switches to each request's role); on SQLite the store."""
    if store.backend == "sqlite":
        yield store
        return
    from sqlalchemy.engine import make_url

    from matdx.store.roles import AUTHENTICATOR_ROLE, ensure_service_roles

    ensure_service_roles(store.engine)
    url = make_url(store.url).set(username=AUTHENTICATOR_ROLE, password=None)
    service = Store(store.home, url.render_as_string(hide_password=False))
    yield service
    service.dispose()


@pytest.fixture
def make_app(service_store: Store):
    """Build the application over the test's store with given settings (on PostgreSQL
    connected as the authenticator)."""
    from fastapi.testclient import TestClient

    from matdx.api.app import create_app
    from matdx.api.settings import ServiceSettings

    clients = []

    def make(**settings) -> TestClient:
        client = TestClient(create_app(service_store, ServiceSettings(**settings)))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def http(make_app):
    """An HTTP client of the application with the default limits (rate limit off)."""
    return make_app(rate_per_minute=0)


@pytest.fixture
def token_of(store: Store):
    """A bearer header for a user: ``token_of("alice", groups={"A"})``.

    A SQLite store serves its OS account only, so a test that needs a token of another
    person is marked ``postgres`` and runs on PostgreSQL only (the store for several
    people), where the user is a person's login role (made if missing, with the given
    projects and administrator membership; roles are shared by the server's databases).
    """
    from matdx.store.identity import os_account
    from matdx.store.roles import add_member, add_user, ensure_service_roles, list_users
    from matdx.store.tokens import issue_token

    def issue(user: str, groups: set[str] | None = None, admin: bool = False) -> dict[str, str]:
        if store.backend == "sqlite" and user != os_account():
            pytest.fail(
                f"a token of {user!r} on SQLite, which serves its OS account only: mark the "
                "test `postgres` (several people share a store on PostgreSQL)"
            )
        if store.backend == "postgresql":
            known = {u.name: u for u in list_users(store.engine)}
            if user not in known:
                add_user(store.engine, user, admin=admin)
            else:
                assert known[user].admin == admin, f"role {user}: admin is {known[user].admin}"
            for group in sorted(groups or ()):
                add_member(store.engine, group, user)
            ensure_service_roles(store.engine)
        with store.transaction() as session:
            issued = issue_token(
                session,
                Requester(user, frozenset(groups or ()), admin=admin),
                name=f"test {user}",
            )
        return {"Authorization": f"Bearer {issued.text}"}

    return issue


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A live ``matdx serve`` over a fresh SQLite store: (url, bearer token)."""
    home = tmp_path / "matdx-home"
    monkeypatch.setenv("MATDX_HOME", str(home))
    monkeypatch.delenv("MATDX_STORE", raising=False)
    token = matdx_cli("tokens", "create", "--name", "browser", check=True).stdout.split()[-1]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "matdx.cli.main", "serve", "--port", str(port), "--rate", "0"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: healthy(url), timeout=120, interval=0.5)
        yield url, token
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        log.close()


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def healthy(url: str) -> bool:
    """The service at ``url`` answers ``/healthz``."""
    import httpx

    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
