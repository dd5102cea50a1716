"""A live ``matdx serve`` (uvicorn) over a store holding the records of the demo campaign and
of the Si/Al Quantum ESPRESSO example (recorded results, loaded in a second instead of
computed in minutes): the OPTIMADE validator of the ``optimade`` package passes with no
failure, and the server stops gracefully on SIGTERM."""

from __future__ import annotations

import gzip
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from matdx.store.store import Store
from tests.conftest import wait_for
from tests.store.factory import insert_documents


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


# The records of `matdx demo` (EMT: EOS of 7 metals, MD of Cu) and of
# examples/si-al-espresso.yaml (pw.x: relax, static, bands, EOS of Si and Al), recorded on this
# machine and published (access public, CC-BY-4.0): see fixtures/README.md.
RECORDED = Path(__file__).parent / "fixtures" / "demo-and-si-al-espresso.jsonl.gz"


def _recorded_documents() -> list[dict]:
    with gzip.open(RECORDED, "rt") as lines:
        return [json.loads(line) for line in lines]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_optimade_validator_passes_against_the_demo_store(tmp_path, monkeypatch):
    home = tmp_path / "matdx-home"
    monkeypatch.setenv("MATDX_HOME", str(home))
    monkeypatch.delenv("MATDX_STORE", raising=False)
    documents = _recorded_documents()
    methods = {(d["method"]["code"], d["method"]["calculation"]) for d in documents}
    wanted = {("emt", "eos-fit"), ("emt", "md"), ("espresso", "vc-relax"), ("espresso", "eos-fit")}
    assert wanted <= methods
    # The validator reads as an anonymous client: the recorded records are public.
    assert {d["governance"]["access"] for d in documents} == {"public"}
    store = Store(home)
    insert_documents(store, *documents)
    store.dispose()
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
