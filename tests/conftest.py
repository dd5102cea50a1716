"""Fixtures shared by all tests: a throwaway matdx home and store per test.

Every test that uses a store (through ``home``, ``client`` or ``store_url``) runs twice: on
SQLite and on PostgreSQL (``[sqlite]`` / ``[postgresql]`` in the test id); on PostgreSQL
only when marked ``postgres`` (tests of several people, which SQLite does not serve). The
PostgreSQL server is started once per session from the installed binaries
(:mod:`matdx.store.pgserver`); each test gets a fresh database of its own, copied from a
migrated template. Run one backend only with ``--store-backend sqlite`` (or
``postgresql``).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BACKENDS = ("sqlite", "postgresql")
TEMPLATE_DATABASE = "matdx_template"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--store-backend",
        action="append",
        choices=BACKENDS,
        help="run the store-using tests on this backend only (repeatable; default: both)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize every test that (through its fixtures) uses a store over the backends."""
    if "store_backend" in metafunc.fixturenames:
        chosen = metafunc.config.getoption("store_backend") or list(BACKENDS)
        if metafunc.definition.get_closest_marker("postgres") is not None:
            # Several people's tests: a SQLite store is one OS account's by design.
            chosen = [b for b in chosen if b == "postgresql"]
        metafunc.parametrize("store_backend", chosen)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A throwaway PostgreSQL server for the whole session, with a migrated template database.

    Fails (never skips) when the PostgreSQL binaries are missing, saying how to install them.
    """
    from matdx.store.pgserver import PostgresNotInstalled, TemporaryPostgres
    from matdx.store.store import Store

    try:
        server = TemporaryPostgres().start()
    except PostgresNotInstalled as missing:
        pytest.fail(f"the PostgreSQL backend tests need a server: {missing}", pytrace=False)
    try:
        url = server.create_database(TEMPLATE_DATABASE)
        # Migrate the template once; every test database is a copy of it.
        Store(tmp_path_factory.mktemp("template-home"), url).dispose()
        yield server
    finally:
        server.stop()


@pytest.fixture
def store_url(store_backend: str, request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The test's database URL: None for SQLite (the file in ``home``), else a fresh
    PostgreSQL database that is dropped after the test."""
    if store_backend == "sqlite":
        yield None
        return
    server = request.getfixturevalue("postgres_server")
    name = f"test_{uuid.uuid4().hex[:20]}"
    url = server.create_database(name, template=TEMPLATE_DATABASE)
    try:
        yield url
    finally:
        server.drop_database(name)


@pytest.fixture(autouse=True)
def _importable_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Task-farm workers run in fresh processes: let them import ``tests.*`` job functions."""
    path = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", f"{REPO}{os.pathsep}{path}" if path else str(REPO))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str | None) -> Iterator[Path]:
    """An empty matdx home directory, also set as ``MATDX_HOME`` for CLI subprocesses, with
    ``MATDX_STORE`` naming the test's PostgreSQL database on that backend (so ``Store(home)``,
    ``Client(home)`` and ``matdx`` subprocesses all use it)."""
    directory = tmp_path / "matdx-home"
    monkeypatch.setenv("MATDX_HOME", str(directory))
    if store_url is None:
        monkeypatch.delenv("MATDX_STORE", raising=False)
    else:
        monkeypatch.setenv("MATDX_STORE", store_url)
    yield directory
    _stop_farms(directory)


@pytest.fixture
def client(home: Path):
    from matdx.client import Client
    from matdx.workflows.executors.local import LocalExecutor

    made = Client(home, executors={"local": LocalExecutor(workers=2)})
    yield made
    made.store.dispose()


def _stop_farms(home: Path) -> None:
    """Kill task farms a test left running (a test's failure must not leak processes)."""
    from matdx.hpc.farm import process_start_time, read_events

    for events in (home / "batches").glob("*/events.jsonl"):
        for event in read_events(events.parent):
            if (
                event["event"] == "farm-start"
                and process_start_time(event["pid"]) == event["start_time"]
            ):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(event["pid"], 9)
    pool = home / "pool" / "pool.json"  # the local executor's warm pool, before any batch
    with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
        started = json.loads(pool.read_text())
        if process_start_time(started["pid"]) == started["start_time"]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(started["pid"], 9)


def matdx_cli(
    *args: str, check: bool = False, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the ``matdx`` command line in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "matdx.cli.main", *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def cli_user(monkeypatch: pytest.MonkeyPatch, name: str) -> str:
    """Act as ``name`` in ``matdx`` subprocesses where the store lets a user name be given
    (PostgreSQL); on SQLite the user is the account running the tests, whose name is
    returned (and ``$MATDX_USER`` is cleared)."""
    if os.environ.get("MATDX_STORE"):
        monkeypatch.setenv("MATDX_USER", name)
        return name
    from matdx.store.identity import os_account

    monkeypatch.delenv("MATDX_USER", raising=False)
    return os_account()


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"condition not met within {timeout} s")
