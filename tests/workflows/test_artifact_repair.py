"""Objects whose bytes went bad: replaced when the same content arrives again, and refetched
by ``matdx store verify --repair`` from the run directories that still hold the bytes."""

from __future__ import annotations

import os

from matdx.store.artifacts import ObjectStatus
from matdx.workflows import Flow
from tests.conftest import matdx_cli
from tests.workflows import jobs
from tests.workflows.test_engine import campaign, outputs


def corrupt(path) -> None:
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF  # one flipped byte: same size, different hash
    path.write_bytes(bytes(data))


def test_corrupt_object_is_replaced_when_its_content_is_stored_again(client):
    text = "bytes that will rot"
    sha, _ = client.store.artifacts.put_bytes(text.encode())
    corrupt(client.store.artifacts.path(sha))
    assert client.store.artifacts.verify(sha) == ObjectStatus.CORRUPT
    assert client.store.artifacts.put_bytes(text.encode())[0] == sha
    assert client.store.artifacts.verify(sha) == ObjectStatus.OK


def test_store_verify_repair_refetches_from_run_directories(client):
    first, second = jobs.write_file("first file"), jobs.write_file("second, longer file")
    cid = client.submit(campaign(Flow([first]), Flow([second])))
    client.run(cid, poll_s=0.1, timeout_s=60)
    result = outputs(client, cid)
    rotten, gone = result[first.id]["file"].sha256, result[second.id]["file"].sha256
    corrupt(client.store.artifacts.path(rotten))
    client.store.artifacts.remove(gone)

    before = matdx_cli("store", "verify")
    assert before.returncode == 1
    assert f"corrupt {rotten}" in before.stdout and f"missing {gone}" in before.stdout

    repaired = matdx_cli("store", "verify", "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "1 missing, 1 corrupt, 2 repaired" in repaired.stdout
    assert "data.txt" in repaired.stdout  # where the bytes came from
    after = matdx_cli("store", "verify")
    assert after.returncode == 0
    assert client.store.artifacts.path(rotten).read_text() == "first file"


def test_store_verify_repair_fails_when_no_run_directory_holds_the_bytes(client):
    writer = jobs.write_file("only copy")
    cid = client.submit(campaign(Flow([writer])))
    client.run(cid, poll_s=0.1, timeout_s=60)
    sha = outputs(client, cid)[writer.id]["file"].sha256
    client.store.artifacts.remove(sha)
    for path in (client.store.home / "runs").rglob("data.txt"):
        path.write_text("edited after the run")  # the run directory no longer has the bytes
    repaired = matdx_cli("store", "verify", "--repair")
    assert repaired.returncode == 1
    assert "1 missing, 0 corrupt, 0 repaired" in repaired.stdout
