"""A live ``matdx serve`` (uvicorn) over a store holding the demo campaign: the OPTIMADE
validator of the ``optimade`` package passes with no failure, and the server stops gracefully
on SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import matdx_cli, wait_for


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.slow
@pytest.mark.timeout(3600)  # the demo alone takes minutes on a busy machine
def test_optimade_validator_passes_against_the_demo_store(tmp_path, monkeypatch):
    home = tmp_path / "matdx-home"
    monkeypatch.setenv("MATDX_HOME", str(home))
    monkeypatch.delenv("MATDX_STORE", raising=False)
    matdx_cli("demo", "--workers", "2", check=True, timeout=1800)
    # The validator reads as an anonymous client: publish the demo's records.
    matdx_cli(
        "records",
        "set-access",
        "demo",
        "--access",
        "public",
        "--license",
        "CC-BY-4.0",
        "--reason",
        "published for the OPTIMADE validator",
        check=True,
    )
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "matdx.cli.main", "serve", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: _healthy(url), timeout=120, interval=0.5)
        validator = Path(sys.executable).with_name("optimade-validator")
        result = subprocess.run(
            [str(validator), f"{url}/optimade/v1"],
            capture_output=True,
            text=True,
            timeout=900,
        )
        print(result.stdout[-3000:])
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
        assert "Passed" in result.stdout and "FAILURES\n" not in result.stdout.replace(
            "OPTIONAL TEST FAILURES", ""
        )
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=60)
        log.close()
    # uvicorn finishes the requests in flight, runs the shutdown, then re-raises SIGTERM
    log_text = (tmp_path / "serve.log").read_text()
    assert code in (0, -signal.SIGTERM), log_text[-2000:]
    assert log_text.rstrip().endswith("requests finished, store closed"), log_text[-2000:]
    access_lines = [
        line for line in (tmp_path / "serve.log").read_text().splitlines() if line.startswith("{")
    ]
    assert any('"path": "/optimade/v1/structures"' in line for line in access_lines)
