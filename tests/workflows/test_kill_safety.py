"""SIGKILL at random moments: no result lost, none duplicated, no job stuck."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import and_, func, select

from matdx.hpc.farm import process_start_time, read_events
from matdx.store.models import Attempt, Batch, Job, Record
from matdx.store.store import Store
from matdx.workflows import Flow
from matdx.workflows.submit import CampaignGraph
from tests.conftest import matdx_cli
from tests.workflows import jobs

DEMO = Path(__file__).resolve().parents[2] / "matdx" / "demo.yaml"


def kill_farms(home: Path) -> int:
    """SIGKILL every live task farm of the store (as if its node died)."""
    killed = 0
    for directory in (home / "batches").glob("*"):
        for event in read_events(directory):
            if (
                event["event"] == "farm-start"
                and process_start_time(event["pid"]) == event["start_time"]
            ):
                os.killpg(event["pid"], signal.SIGKILL)
                killed += 1
    return killed


def interrupt_runs(
    home: Path, kills: int, seed: int, longest_s: float, kill_farms_every: int
) -> None:
    rng = random.Random(seed)
    for i in range(kills):
        run = subprocess.Popen(
            [sys.executable, "-m", "matdx.cli.main", "run", "--poll", "0.1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.05, longest_s))
        run.send_signal(signal.SIGKILL)
        run.wait()
        if kill_farms_every and i % kill_farms_every == kill_farms_every - 1:
            kill_farms(home)


def check_store(home: Path) -> dict[str, int]:
    """The invariants after recovery; returns a few counts for the test to report."""
    store = Store(home)
    try:
        with store.transaction() as session:
            return _check(session, home)
    finally:
        store.dispose()


def _check(session, home: Path) -> dict[str, int]:
    states = dict(session.execute(select(Job.state, func.count()).group_by(Job.state)).all())
    assert set(states) == {"COMPLETED"}, states
    # one record per attempt that ran, none for attempts that were lost
    per_attempt = session.execute(
        select(Attempt.state, func.count(Record.record_id))
        .outerjoin(Record, and_(Record.job_id == Attempt.job_id, Record.attempt == Attempt.number))
        .group_by(Attempt.job_id, Attempt.number, Attempt.state)
    ).all()
    for state, records in per_attempt:
        assert records == (0 if state == "LOST" else 1), (state, records)
    # every job's result is the record of its own last attempt
    mismatched = session.scalar(
        select(func.count())
        .select_from(Job)
        .join(Record, Record.record_id == Job.record_id)
        .where(
            Job.reused_from.is_(None),
            (Record.job_id != Job.id) | (Record.attempt != Job.attempt),
        )
    )
    assert mismatched == 0
    # nothing ran twice: one result file per record, no result in a lost attempt's run dir
    results = list((home / "runs").rglob("result.json"))
    records = session.scalar(select(func.count()).select_from(Record))
    assert len(results) == records
    open_batches = session.scalar(select(func.count()).where(Batch.state != "ENDED"))
    assert open_batches == 0
    lost = session.scalar(select(func.count()).where(Attempt.state == "LOST"))
    return {"records": records, "lost_attempts": lost, "jobs": states["COMPLETED"]}


def test_killed_runs_and_farms_recover(home):
    """A quick version: chains and fan-outs of short sleeps, 10 kills."""
    flows = []
    for i in range(6):
        first = jobs.sleep(0.2, i)
        middle = [jobs.sleep(0.1, j) for j in range(4)]
        last = jobs.total([first.output, *(m.output for m in middle)])
        flows.append(Flow([first, *middle, last]))
    from matdx.client import Client

    client = Client(home)
    client.submit(
        CampaignGraph("sleepy", [("test", f) for f in flows], {"type": "local", "workers": 2}, {})
    )
    client.store.dispose()
    interrupt_runs(home, kills=10, seed=7, longest_s=1.5, kill_farms_every=3)
    assert matdx_cli("run", "--poll", "0.1").returncode == 0
    counts = check_store(home)
    assert counts["jobs"] == 36


def short_demo(folder: Path) -> Path:
    """The demo campaign with shorter molecular dynamics: the same studies, sweeps, premelt
    and 69 jobs, so every kind of job and transition is killed, at a seventh of the compute
    (108 Cu atoms for 200 steps instead of 256 for 600)."""
    import yaml

    campaign = yaml.safe_load(DEMO.read_text())
    for study in campaign["studies"]:
        if study["recipe"] == "md":
            study["structures"] = [{**s, "repeat": [3, 3, 3]} for s in study["structures"]]
            study["settings"]["steps"] = 200
            if "premelt_steps" in study["settings"]:
                study["settings"]["premelt_steps"] = 100
    path = folder / "demo-short.yaml"
    path.write_text(yaml.safe_dump(campaign))
    return path


@pytest.mark.slow
def test_sigkill_of_matdx_run_during_the_demo_campaign(home):
    """The acceptance test: the demo campaign (shorter MD), `matdx run` killed at 10 random
    moments (and the task farms too, every third time), then run again to the end."""
    assert matdx_cli("submit", str(short_demo(home.parent))).returncode == 0
    interrupt_runs(home, kills=10, seed=20261130, longest_s=8.0, kill_farms_every=3)
    final = matdx_cli("run", "--poll", "0.2", timeout=900)
    assert final.returncode == 0, final.stderr
    counts = check_store(home)
    assert counts["jobs"] >= 69
    verify = matdx_cli("store", "verify")
    assert verify.returncode == 0, verify.stdout
