"""Fixtures shared by all tests: a throwaway matdx home and store per test."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _importable_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Task-farm workers run in fresh processes: let them import ``tests.*`` job functions."""
    path = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", f"{REPO}{os.pathsep}{path}" if path else str(REPO))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty matdx home directory, also set as ``MATDX_HOME`` for CLI subprocesses."""
    directory = tmp_path / "matdx-home"
    monkeypatch.setenv("MATDX_HOME", str(directory))
    monkeypatch.delenv("MATDX_STORE", raising=False)
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


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"condition not met within {timeout} s")
