"""SIGKILL at seeded random moments across submit, every tick step, harvest and the farm.

Each kill is one trial. A moment is a step (``submit``, ``harvest``, ``recover``, ``expand``,
``release``, ``launch``; :mod:`tests.chaos.killpoint`) and one of the moments around that
step's store transactions (before one begins, before its commit, after its commit), or
``farm``: the local task farm's process group killed at a random delay after a launch (as if
its node died). The evidence of a trial is what the killed process wrote just before it
killed itself (with exit status -9), or the pid of the farm that was killed.

Kills are grouped ten to a campaign (:mod:`tests.chaos.campaigns`); after its kills the
campaign is run to the end by ``matdx run``, and ARCHITECTURE.md's invariants are checked:
every job COMPLETED with one record per attempt that ran and none for lost attempts, each job's
record is its own last attempt's, one ``result.json`` per record, no batch left open, and
``matdx store verify`` clean. CI runs 10 kills; ``MATDX_CHAOS_FULL=1`` runs 100.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import and_, func, select

from matdx.hpc.farm import process_start_time, read_events
from matdx.store.models import Attempt, Batch, Campaign, Job, Record
from matdx.store.store import Store
from tests.chaos.campaigns import DONE_JOBS
from tests.chaos.conftest import FULL
from tests.conftest import matdx_cli
from tests.workflows.test_kill_safety import kill_farms

pytestmark = pytest.mark.slow

KILLS = 100 if FULL else 10
PER_CAMPAIGN = 10
STEPS = ("harvest", "recover", "expand", "release", "launch", "farm")
SEED = 20261207


def killpoint(home: Path, step: str, index: int, mode: str) -> tuple[int, dict | None]:
    evidence = home.parent / f"evidence-{time.monotonic_ns()}.json"
    done = subprocess.run(
        [sys.executable, "-m", "tests.chaos.killpoint", step, str(index), str(evidence), mode],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "MATDX_HOME": str(home)},
    )
    if done.returncode not in (0, -9):
        pytest.fail(f"killpoint {step}#{index} failed: {done.stderr[-2000:]}")
    fired = json.loads(evidence.read_text()) if evidence.exists() else None
    if fired is not None:
        assert done.returncode == -9, "the evidence says it killed itself; it exited"
    return done.returncode, fired


def kill_once(home: Path, step: str, rng: random.Random) -> str | None:
    """One trial: tick until the kill fires (at most 5 ticks); returns its evidence."""
    for _ in range(5):
        if step == "farm":  # an ordinary tick; its farm is killed soon after it starts
            ticking = subprocess.Popen(
                [sys.executable, "-m", "tests.chaos.killpoint", "none", "0",
                 str(home.parent / "unused.json"), "tick"],
                env={**os.environ, "MATDX_HOME": str(home)},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            killed = 0
            deadline = time.monotonic() + 120
            delay = rng.uniform(0.0, 0.5)
            while not killed and time.monotonic() < deadline:
                if live_farms(home):
                    time.sleep(delay)
                    killed = kill_farms(home)
                elif ticking.poll() is not None and not live_farms(home):
                    break
                time.sleep(0.05)
            ticking.wait(timeout=300)
            if killed:
                return f"farm: SIGKILL of {killed} live farm process group(s)"
            continue
        _, fired = killpoint(home, step, rng.randrange(6), "tick")
        if fired is not None:
            return (f"{step}: SIGKILL {fired['what']} at moment {fired['moment']} "
                    f"(pid {fired['pid']})")
        time.sleep(0.2)
    return None


def live_farms(home: Path) -> int:
    """Farms of the store that started and have not ended."""
    live = 0
    for directory in (home / "batches").glob("*"):
        events = read_events(directory)
        starts = [e for e in events if e["event"] == "farm-start"]
        if starts and not any(e["event"] == "farm-end" for e in events) \
                and process_start_time(starts[-1]["pid"]) == starts[-1]["start_time"]:
            live += 1
    return live


def tally(home: Path) -> dict[str, int]:
    """Lost, duplicated and stuck counts after the campaign ran to its end."""
    store = Store(home)
    try:
        with store.transaction() as session:
            states = dict(
                session.execute(select(Job.state, func.count()).group_by(Job.state)).all()
            )
            per_attempt = session.execute(
                select(Attempt.state, func.count(Record.record_id))
                .outerjoin(Record, and_(Record.job_id == Attempt.job_id,
                                        Record.attempt == Attempt.number))
                .group_by(Attempt.job_id, Attempt.number, Attempt.state)
            ).all()
            mismatched = session.scalar(
                select(func.count()).select_from(Job)
                .join(Record, Record.record_id == Job.record_id)
                .where(Job.reused_from.is_(None),
                       (Record.job_id != Job.id) | (Record.attempt != Job.attempt))
            )
            records = session.scalar(select(func.count()).select_from(Record))
            open_batches = session.scalar(select(func.count()).where(Batch.state != "ENDED"))
            campaigns = session.scalar(select(func.count()).select_from(Campaign))
    finally:
        store.dispose()
    results = len(list((home / "runs").rglob("result.json")))
    # a record too many: two for one attempt, one for a lost attempt, a stray result file,
    # or the campaign submitted twice
    duplicated = sum(n - 1 for state, n in per_attempt if state != "LOST" and n > 1)
    duplicated += sum(n for state, n in per_attempt if state == "LOST")
    duplicated += max(0, results - records) + max(0, campaigns - 1)
    completed = states.get("COMPLETED", 0)
    unfinished = sum(n for state, n in states.items() if state not in ("COMPLETED", "FAILED",
                                                                      "CANCELLED"))
    stuck = unfinished + open_batches
    # a result that should be there and is not: a job that ended without completing, or a
    # completed job whose record is not its own last attempt's
    lost = max(0, DONE_JOBS - completed - unfinished) + mismatched
    return {"lost": lost, "duplicated": duplicated, "stuck": stuck, "jobs": completed}


@pytest.mark.timeout(14400 if FULL else 3600)  # each kill starts a process: slow when loaded
def test_sigkill_at_seeded_moments(tmp_path, ledger):
    rng = random.Random(SEED)
    plan = [rng.choice(STEPS) for _ in range(KILLS)]
    for group in range(0, KILLS, PER_CAMPAIGN):
        home = tmp_path / f"campaign{group // PER_CAMPAIGN}" / "home"
        home.mkdir(parents=True)
        evidence = []
        steps = plan[group : group + PER_CAMPAIGN]
        if group // PER_CAMPAIGN % 2 == 0:  # every other campaign: a kill during submit
            _, fired = killpoint(home, "submit", rng.randrange(3), "submit")
            evidence.append(("submit", fired and f"submit: SIGKILL {fired['what']} at "
                                                   f"moment {fired['moment']}"))
            steps = steps[1:]
        store = Store(home)
        with store.transaction() as session:
            submitted = session.scalar(select(func.count()).select_from(Campaign))
        store.dispose()
        if not submitted:  # killed before its commit: nothing was written; submit again
            killpoint(home, "none", 0, "submit")
        for step in steps:
            evidence.append((step, kill_once(home, step, rng)))
        final = matdx_cli("run", "--poll", "0.1", timeout=600,
                          env={"MATDX_HOME": str(home), "MATDX_STORE": ""})
        counts = tally(home)
        verify = matdx_cli("store", "verify", env={"MATDX_HOME": str(home), "MATDX_STORE": ""})
        survived = (final.returncode == 0 and verify.returncode == 0
                    and counts["jobs"] == DONE_JOBS
                    and not (counts["lost"] or counts["duplicated"] or counts["stuck"]))
        for step, fired in evidence:
            ledger.trial(f"SIGKILL during {step}", evidence=fired, survived=survived,
                         lost=counts["lost"], duplicated=counts["duplicated"],
                         stuck=counts["stuck"])
        print(f"campaign {group // PER_CAMPAIGN}: {sum(1 for _, f in evidence if f)}/"
              f"{len(evidence)} kills fired, survived={survived} {counts}", flush=True)
        assert survived, (counts, final.stdout[-3000:], final.stderr[-3000:], verify.stdout)
        # a kill whose moment never came (the campaign was already past it) is not run
        assert sum(1 for _, fired in evidence if fired) >= 0.8 * len(evidence), evidence
