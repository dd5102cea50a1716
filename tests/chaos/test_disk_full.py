"""Store-side errors are not the job's fault: a result the store cannot take now (disk full)
stays in its run directory, spends no retry, and the next tick records it.

The full disk is real: a small tmpfs the test mounts (root, as in CI) and fills to ENOSPC.
Each test is one trial of the chaos suite's ledger; its evidence is the ENOSPC the write met
(logged by harvest).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from matdx.store.models import Job, JobState
from matdx.workflows import Flow
from matdx.workflows.engine import tick
from tests.workflows import jobs
from tests.workflows.test_untrusted_rundir import run_farms_to_the_end, submit


@contextlib.contextmanager
def small_filesystem(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` for the duration of the block."""
    where.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True, text=True,
    )
    if mounted.returncode != 0:
        pytest.fail(f"this test mounts a tmpfs (needs root): {mounted.stderr}", pytrace=False)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def fill(directory: Path) -> Path:
    """Fill the filesystem of ``directory``; returns the filler file. Raises if the disk never
    reported ENOSPC (the evidence that the fault is real)."""
    filler = directory / "filler"
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * (64 << 10))
                handle.flush()
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise
            return filler
    raise AssertionError("the filesystem never filled up")


def job_row(client, job_id: str) -> tuple[str, int, int, int]:
    with client.store.transaction() as session:
        job = session.get(Job, job_id)
        return job.state, job.attempt, job.failures, job.requeues


def record(ledger, fault: str, client, job_ids, caplog, marker: str) -> None:
    """One ledger trial: the evidence is harvest's log of the failed write."""
    states = [job_row(client, job_id) for job_id in job_ids]
    fired = next((r.getMessage() for r in caplog.records if marker in r.getMessage()), None)
    ledger.trial(
        fault,
        evidence=fired and f"ENOSPC: {marker}",
        survived=all(s[0] == JobState.COMPLETED for s in states),
        lost=sum(1 for s in states if s[0] not in (JobState.COMPLETED, JobState.RUNNING)),
        duplicated=sum(1 for s in states if s[1] != 1),
        stuck=sum(1 for s in states if s[0] != JobState.COMPLETED),
    )


def test_disk_full_while_storing_an_artifact_defers_the_result(client, caplog, ledger):
    writer = jobs.write_file("x" * 200_000)
    other = jobs.add(1, 2)
    submit(client, [Flow([writer]), Flow([other])])
    objects = client.store.artifacts.root
    with small_filesystem(objects, "1m"):
        run_farms_to_the_end(client)
        filler = fill(objects)
        with caplog.at_level(logging.WARNING, logger="matdx.workflows.harvest"):
            report = tick(client.store, executors=client.executors, launch_jobs=False)
        assert "No space left on device" in caplog.text  # the write really failed
        assert report.harvest.deferred == 1
        assert report.harvest.completed == 1  # the other job is not held up
        assert job_row(client, writer.id) == (JobState.RUNNING, 1, 0, 0)
        assert (Path(run_dir(client, writer.id)) / "result.json").is_file()

        filler.unlink()  # space returns
        report = tick(client.store, executors=client.executors, launch_jobs=False)
        assert report.harvest.completed == 1 and report.harvest.deferred == 0
        assert job_row(client, writer.id) == (JobState.COMPLETED, 1, 0, 0)
        with client.store.transaction() as session:
            record_id = session.scalar(select(Job.record_id).where(Job.id == writer.id))
        assert record_id is not None
        assert report.harvest.batches_ended == 1
        record(ledger, "disk full during artifact write", client, [writer.id, other.id],
               caplog, "No space left on device")


def test_disk_full_under_the_sqlite_database_defers_the_result(tmp_path, monkeypatch, caplog,
                                                                ledger):
    """The whole matdx home (SQLite database included) on a full disk."""
    from matdx.client import Client
    from matdx.workflows.executors.local import LocalExecutor

    monkeypatch.delenv("MATDX_STORE", raising=False)
    with small_filesystem(tmp_path / "small-home", "8m") as small:
        monkeypatch.setenv("MATDX_HOME", str(small))
        moved = Client(small, executors={"local": LocalExecutor(workers=2)})
        try:
            one = jobs.add(2, 3)
            submit(moved, [Flow([one])])
            run_farms_to_the_end(moved)
            filler = fill(small)
            with caplog.at_level(logging.WARNING, logger="matdx.workflows.harvest"):
                report = tick(moved.store, executors=moved.executors, launch_jobs=False)
            assert "database or disk is full" in caplog.text
            assert report.harvest.deferred == 1 and report.harvest.completed == 0
            assert job_row(moved, one.id) == (JobState.RUNNING, 1, 0, 0)

            filler.unlink()
            report = tick(moved.store, executors=moved.executors, launch_jobs=False)
            assert report.harvest.completed == 1
            assert job_row(moved, one.id) == (JobState.COMPLETED, 1, 0, 0)
            record(ledger, "disk full during result write", moved, [one.id], caplog,
                   "database or disk is full")
        finally:
            moved.store.dispose()


def run_dir(client, job_id: str) -> str:
    with client.store.transaction() as session:
        return session.scalar(select(Job.run_dir).where(Job.id == job_id))
