"""The local executor's warm pool: reused across ticks, stopped when idle, safe to kill."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from matdx.client import Client
from matdx.hpc.farm import process_start_time, read_events
from matdx.workflows import Flow
from matdx.workflows.executors.local import LocalExecutor
from matdx.workflows.submit import CampaignGraph
from tests.conftest import matdx_cli
from tests.workflows import jobs
from tests.workflows.test_kill_safety import check_store


def _pool(home: Path) -> dict | None:
    try:
        return json.loads((home / "pool" / "pool.json").read_text())
    except FileNotFoundError:
        return None


def _farm_pids(home: Path) -> list[int]:
    return [
        event["pid"]
        for directory in sorted((home / "batches").glob("*"))
        for event in read_events(directory)
        if event["event"] == "farm-start"
    ]


def _wait_for(condition, timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def _chain(n: int = 3) -> Flow:
    steps = [jobs.add(0, 1)]
    for _ in range(n - 1):
        steps.append(jobs.add(steps[-1].output, 1))
    return Flow(steps)


def test_pool_runs_every_campaign_then_stops_when_idle(home):
    client = Client(home, executors={"local": LocalExecutor(2, idle_s=15.0)})
    for i in range(2):
        campaign = client.submit(
            CampaignGraph(f"c{i}", [("t", _chain())], {"type": "local", "workers": 2}, {}),
            force=True,
        )
        statuses = client.run(campaign, poll_s=0.01, timeout_s=120)
        assert statuses[0].counts == {"COMPLETED": 3}
    pids = _farm_pids(home)
    assert len(pids) == 2 and pids[0] == pids[1]  # one warm pool ran both campaigns
    pool = _pool(home)
    assert pool is not None and pool["pid"] == pids[0]
    # idle for 15 s (long enough that a loaded machine submits the second campaign before
    # it): the pool stops by itself and says so
    assert _wait_for(lambda: process_start_time(pids[0]) is None and _pool(home) is None)
    client.store.dispose()


def test_cancel_stops_one_batch_of_the_pool(home):
    client = Client(home, executors={"local": LocalExecutor(2, idle_s=5.0)})
    campaign = client.submit(
        CampaignGraph("slow", [("t", Flow([jobs.sleep(30, 1)]))], {"type": "local"}, {})
    )
    client.tick()
    batch = next((home / "batches").glob("*"))
    assert _wait_for(lambda: any(e["event"] == "start" for e in read_events(batch)))
    assert client.cancel([campaign]) >= 1
    assert _wait_for(lambda: any(e["event"] == "farm-end" for e in read_events(batch)))
    events = read_events(batch)
    assert [e["reason"] for e in events if e["event"] == "farm-end"] == ["cancelled"]
    assert process_start_time(_farm_pids(home)[0]) is not None  # the pool itself lives on
    client.store.dispose()


def _live(home: Path) -> bool:
    pool = _pool(home)
    return pool is not None and process_start_time(pool["pid"]) == pool["start_time"]


def _kill_pool_only(home: Path) -> bool:
    """SIGKILL the pool process alone (not its process group): its workers must die with it."""
    pool = _pool(home)
    if not _live(home):
        return False
    os.kill(pool["pid"], signal.SIGKILL)
    return True


def test_sigkill_of_the_pool_or_the_tick_loses_and_duplicates_nothing(home, monkeypatch):
    """`matdx run` and the warm pool (the process alone, so its workers are orphaned unless
    they die with it) are killed at seeded random moments; then one run finishes the work."""
    monkeypatch.setenv("MATDX_POOL_IDLE_S", "5")
    flows = []
    for i in range(6):
        first = jobs.sleep(0.15, i)
        middle = [jobs.sleep(0.05, j) for j in range(4)]
        last = jobs.total([first.output, *(m.output for m in middle)])
        flows.append(Flow([first, *middle, last]))
    client = Client(home)
    client.submit(
        CampaignGraph("sleepy", [("t", f) for f in flows], {"type": "local", "workers": 2}, {})
    )
    client.store.dispose()
    rng = random.Random(16)
    pool_kills = 0
    for i in range(8):
        run = subprocess.Popen(
            [sys.executable, "-m", "matdx.cli.main", "run", "--poll", "0.05"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # a random moment after the run has a pool working (its start-up varies with load)
        _wait_for(lambda run=run: _live(home) or run.poll() is not None)
        time.sleep(rng.uniform(0.0, 0.6))
        if i % 2:
            pool_kills += _kill_pool_only(home)
        run.send_signal(signal.SIGKILL)
        run.wait()
    assert pool_kills >= 1
    final = matdx_cli("run", "--poll", "0.05")
    assert final.returncode == 0, final.stderr
    counts = check_store(home)
    assert counts["jobs"] == 36


@pytest.mark.parametrize("bad", ["0", "-1"])
def test_pool_refuses_bad_worker_counts(tmp_path, bad):
    done = subprocess.run(
        [sys.executable, "-m", "matdx.workflows.executors.local_pool", str(tmp_path / "p"),
         "--workers", bad, "--idle-s", "1"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2 and "--workers: must be at least 1" in done.stderr
    assert not (tmp_path / "p").exists()
