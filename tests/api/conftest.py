"""Fixtures of the web-service tests: a store of the test's backend and an HTTP client of the
application over it (in process; the slow tests start a real uvicorn server)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from matdx.store.access import Requester
from matdx.store.store import Store


@pytest.fixture
def store(home: Path) -> Iterator[Store]:
    made = Store(home)
    yield made
    made.dispose()


@pytest.fixture
def make_app(store: Store):
    """Build the application over the test's store with given settings."""
    from fastapi.testclient import TestClient

    from matdx.api.app import create_app
    from matdx.api.settings import ServiceSettings

    clients = []

    def make(**settings) -> TestClient:
        client = TestClient(create_app(store, ServiceSettings(**settings)))
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
    """A bearer header for a user: ``token_of("alice", groups={"A"})``."""
    from matdx.store.tokens import issue_token

    def issue(user: str, groups: set[str] | None = None, admin: bool = False) -> dict[str, str]:
        with store.transaction() as session:
            issued = issue_token(
                session,
                Requester(user, frozenset(groups or ()), admin=admin),
                name=f"test {user}",
            )
        return {"Authorization": f"Bearer {issued.text}"}

    return issue
