"""Harvest reads run directories as untrusted input: one bad run directory is that job's
failure, every other job is harvested, and the campaign still finishes.

The run directories are written by real task farms on this machine; the test then does to one
of them what a broken or hostile compute node could (tear ``result.json``, swap an output for
a FIFO, a device or a link to ``/etc``), before the tick harvests.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from matdx.hpc.farm import read_events
from matdx.store.models import Attempt, Job, JobState
from matdx.workflows import Flow
from matdx.workflows.engine import tick
from matdx.workflows.submit import CampaignGraph
from tests.conftest import wait_for
from tests.workflows import jobs


def submit(client, flows, **executor) -> str:
    spec = {"type": "local", "workers": 2, **executor}
    return client.submit(CampaignGraph("untrusted", [("test", f) for f in flows], spec, {}))


def run_farms_to_the_end(client) -> None:
    """One tick that launches everything ready, then wait until every farm has ended (the run
    directories hold their results, nothing is harvested yet)."""
    report = tick(client.store, executors=client.executors)
    assert report.launch.launched > 0

    def ended() -> bool:
        directories = list((client.store.home / "batches").glob("*"))
        return bool(directories) and all(
            any(e["event"] == "farm-end" for e in read_events(d)) for d in directories
        )

    wait_for(ended, timeout=180)


def run_dir_of(client, job_id: str) -> Path:
    with client.store.transaction() as session:
        return Path(session.scalar(select(Job.run_dir).where(Job.id == job_id)))


def job_row(client, job_id: str) -> tuple[str, int, int, int, str]:
    with client.store.transaction() as session:
        job = session.get(Job, job_id)
        return job.state, job.attempt, job.failures, job.requeues, job.reason


def test_one_torn_result_among_100_fails_alone_and_is_retried(client):
    """Acceptance: one torn result.json among 100 finished jobs; one tick records 99 and
    reports the one with its reason; the campaign finishes after the retry."""
    many = [jobs.add(i, 1) for i in range(100)]
    cid = submit(client, [Flow([j]) for j in many])
    run_farms_to_the_end(client)
    torn = many[37]
    result = run_dir_of(client, torn.id) / "result.json"
    text = result.read_text()
    result.write_text(text[: len(text) // 2])  # a write cut short by a crashed node

    report = tick(client.store, executors=client.executors, launch_jobs=False)

    assert report.harvest.completed == 99
    assert report.harvest.errored == 1
    assert list(report.harvest.refused) == [torn.id]
    assert "result.json: not valid JSON" in report.harvest.refused[torn.id]
    state, _, failures, _, reason = job_row(client, torn.id)
    assert state == JobState.READY  # recover made a new attempt at once
    assert failures == 0  # an infrastructure failure spends no retry
    assert "harvest refused the run directory: result.json: not valid JSON" in reason
    with client.store.transaction() as session:
        first = session.get(Attempt, (torn.id, 1))
    assert first.state == "FAILED" and first.error["kind"] == "infrastructure"

    [status] = client.run(cid, poll_s=0.1, timeout_s=120)
    assert status.counts == {"COMPLETED": 100}
    assert job_row(client, torn.id)[:2] == (JobState.COMPLETED, 2)


def _make_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _make_device(path: Path) -> None:
    path.unlink()
    os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero's numbers


def _link_to_etc(path: Path) -> None:
    path.unlink()
    path.symlink_to("/etc/passwd")


def _directory_link_to_etc(path: Path) -> None:
    """The output is named through a directory that is a link to /etc."""
    run_dir = path.parent
    (run_dir / "sub").symlink_to("/etc")
    result = json.loads((run_dir / "result.json").read_text())
    result["output"]["file"]["@artifact"]["path"] = "sub/passwd"
    (run_dir / "result.json").write_text(json.dumps(result))


def _rename(field: str, value: str):
    def change(path: Path) -> None:
        result_file = path.parent / "result.json"
        result = json.loads(result_file.read_text())
        result["output"]["file"]["@artifact"][field] = value
        result_file.write_text(json.dumps(result))

    return change


def _grow(path: Path) -> None:
    with open(path, "wb") as handle:
        handle.truncate(3 << 20)  # 3 MiB, sparse: over the campaign's 1 MiB


def _wrong_type(path: Path) -> None:
    result_file = path.parent / "result.json"
    result = json.loads(result_file.read_text())
    result["attempt"] = "one"
    result_file.write_text(json.dumps(result))


HOSTILE = {
    "fifo": (_make_fifo, "data.txt: is a FIFO (named pipe), not a regular file"),
    "device": (_make_device, "data.txt: is a character device, not a regular file"),
    "link to /etc": (_link_to_etc, "data.txt: is a symbolic link, not a regular file"),
    "directory link": (_directory_link_to_etc, "'sub' is a symbolic link or not a directory"),
    "path outside": (_rename("path", "/etc/passwd"), "outside the run directory"),
    "dot-dot path": (_rename("path", "../../x"), "leaves the run directory"),
    "dot-dot name": (_rename("name", "../../x"), "has an empty, '.' or '..' part"),
    "control name": (_rename("name", "a\x1b[2Jb"), "contains a control character"),
    "absolute name": (_rename("name", "/etc/x"), "must be a relative path"),
    "too large": (_grow, "over the campaign's limit of 1048576 bytes"),
    "wrong type": (_wrong_type, "result.json: attempt: Input should be a valid integer"),
}


@pytest.mark.parametrize("fault", list(HOSTILE))
def test_hostile_output_fails_its_job_only(client, fault):
    make, reason = HOSTILE[fault]
    writer = jobs.write_file("secret-free text")
    others = [jobs.add(i, i) for i in range(3)]
    submit(client, [Flow([writer]), *(Flow([o]) for o in others)], max_output_mb=1)
    run_farms_to_the_end(client)
    make(run_dir_of(client, writer.id) / "data.txt")

    # A FIFO must never hang the tick: run it in a thread with a deadline.
    reports = []
    worker = threading.Thread(
        target=lambda: reports.append(
            tick(client.store, executors=client.executors, launch_jobs=False)
        ),
        daemon=True,
    )
    started = time.monotonic()
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), f"the tick hung on a {fault}"
    assert time.monotonic() - started < 60
    [report] = reports
    assert report.harvest.completed == 3
    assert reason in report.harvest.refused[writer.id]
    state, _, failures, _, why = job_row(client, writer.id)
    assert state == JobState.READY and failures == 0
    assert reason in why
    # Nothing of /etc reached the store.
    passwd = Path("/etc/passwd").read_bytes()
    for path in client.store.artifacts.root.rglob("*"):
        if path.is_file():
            assert path.read_bytes() != passwd
