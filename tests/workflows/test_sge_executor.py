"""Campaigns on the real single-node Grid Engine test cluster (issue 16 acceptance points).

The cluster must be running (``bash hpc/testcluster/sge.sh start --slots 8``); otherwise every
test here fails with that instruction. Each batch is one ``qsub`` job in the ``smp`` parallel
environment whose task farm runs under ``mpirun`` (Open MPI takes the granted slots from
``$PE_HOSTFILE``). Most tests use a SQLite store of their own; the concurrent-tick test runs on
both backends. Allocation use is measured by ``benchmarks/sge_packing.py``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from matdx.client import Client
from matdx.store.models import Attempt, AttemptState, Batch, Job, JobState, Record
from matdx.workflows import Flow
from matdx.workflows.executors.batch import batch_job_name
from matdx.workflows.executors.spec import validate_executor
from matdx.workflows.submit import CampaignGraph
from tests.hpc.sge_helpers import require_sge_cluster
from tests.workflows import jobs

pytestmark = [pytest.mark.sge, pytest.mark.slow]

SITE = "local-sge-testcluster"


@pytest.fixture
def cluster() -> int:
    return require_sge_cluster(min_slots=8)


@pytest.fixture
def sge_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cluster: int):
    home = tmp_path / "home"
    monkeypatch.setenv("MATDX_HOME", str(home))
    monkeypatch.delenv("MATDX_STORE", raising=False)
    client = Client(home)
    yield client
    _delete_batches(client)
    client.store.dispose()


def _delete_batches(client: Client) -> None:
    """Delete the batch jobs a failed test left behind (plain qdel, see the notes)."""
    with client.store.transaction() as session:
        ids = [b for b in session.scalars(select(Batch.scheduler_id)) if b]
    if ids:
        subprocess.run(["qdel", *ids], check=False, capture_output=True)


def executor(**fields) -> dict:
    section = {"type": "sge", "site": SITE, **fields}
    return validate_executor(section).model_dump(mode="json")


def sleepers(n: int, seconds: float, offset: int = 0, **resources) -> list[tuple[str, Flow]]:
    flows = []
    for i in range(n):
        one = jobs.sleep(seconds, offset + i)  # distinct inputs: no job reuses another's result
        if resources:
            one.configure(resources=resources)
        flows.append(("sleep", Flow([one])))
    return flows


def tick_until_done(client: Client, campaign_id: str, timeout: float, every: float = 2.0):
    """Tick until the campaign is done; returns the tick reports."""
    reports = []
    deadline = time.monotonic() + timeout
    while True:
        reports.append(client.tick(wait_s=30))
        print(reports[-1].summary())  # shown with pytest -s: the run, tick by tick
        if client.status(campaign_id)[0].done:
            return reports
        if time.monotonic() > deadline:
            pytest.fail(f"campaign not done after {timeout} s: {client.status(campaign_id)}")
        time.sleep(every)


def query(client: Client, statement):
    with client.store.transaction() as session:
        return session.execute(statement).all()


def assert_one_record_per_job(client: Client, campaign_id: str) -> None:
    """Every job completed with exactly one completed record; lost attempts left none."""
    per_job = dict(
        query(
            client,
            select(Record.job_id, func.count())
            .where(Record.campaign_id == campaign_id, Record.status == "completed")
            .group_by(Record.job_id),
        )
    )
    states = dict(query(client, select(Job.id, Job.state).where(Job.campaign_id == campaign_id)))
    assert set(states.values()) == {JobState.COMPLETED}
    assert per_job == dict.fromkeys(states, 1)
    lost_with_records = query(
        client,
        select(func.count())
        .select_from(Attempt)
        .join(Record, (Record.job_id == Attempt.job_id) & (Record.attempt == Attempt.number))
        .where(Attempt.state == AttemptState.LOST),
    )
    assert lost_with_records == [(0,)]


def accounting(name_or_id: str, timeout: float = 60) -> str:
    """``qacct -j`` of a finished batch job, waiting for the record (the farm's results are
    harvested before the job itself has ended)."""
    deadline = time.monotonic() + timeout
    while True:
        done = subprocess.run(["qacct", "-j", name_or_id], capture_output=True, text=True,
                              check=False)
        if done.returncode == 0:
            return done.stdout
        if time.monotonic() > deadline:
            pytest.fail(f"no accounting record of {name_or_id} after {timeout} s: {done.stderr}")
        time.sleep(1)


def events_of(client: Client, batch_id: str) -> str:
    path = client.home / "batches" / batch_id / "events.jsonl"
    return path.read_text() if path.is_file() else ""


def test_mixed_job_sizes_run_to_completion_through_qsub(sge_client):
    flows = [
        *sleepers(2, 3.0, 0, cores=4, estimate_s=5.0),
        *sleepers(3, 2.0, 10, cores=2, estimate_s=4.0),
        *sleepers(4, 1.0, 20, cores=1, estimate_s=3.0),
    ]
    spec = executor(resources={"walltime": "00:10:00"})
    cid = sge_client.submit(CampaignGraph("mixed", flows, spec, {}))
    tick_until_done(sge_client, cid, timeout=300)
    batches = query(sge_client, select(Batch.id, Batch.n_tasks, Batch.scheduler_id))
    assert sum(n for _, n, _ in batches) == 9
    for batch_id, _, scheduler_id in batches:
        script = (sge_client.home / "batches" / batch_id / "batch.sh").read_text().splitlines()
        assert "#$ -pe smp 8" in script or any(ln.startswith("#$ -pe smp ") for ln in script)
        record = accounting(scheduler_id)
        assert "granted_pe   smp" in record
        assert "exit_status  0" in record
    starts = [line for batch_id, _, _ in batches for line in events_of(sge_client, batch_id)
              .splitlines() if '"event": "start"' in line]
    assert sorted(int(s.split('"cores": ')[1].split(",")[0].rstrip("}")) for s in starts) == \
        [1, 1, 1, 1, 2, 2, 2, 4, 4]
    assert_one_record_per_job(sge_client, cid)


def test_qdel_requeues_unfinished_tasks_into_a_later_batch(sge_client):
    spec = executor(resources={"walltime": "00:10:00", "cores_per_node": 4})
    cid = sge_client.submit(CampaignGraph("deleted", sleepers(12, 6.0), spec, {}))
    sge_client.tick()
    [(batch_id, job_id)] = query(sge_client, select(Batch.id, Batch.scheduler_id))
    deadline = time.monotonic() + 120
    while events_of(sge_client, batch_id).count('"event": "end"') < 4:
        assert time.monotonic() < deadline, "the first tasks did not finish"
        time.sleep(1)
    subprocess.run(["qdel", job_id], check=True, capture_output=True)
    reports = tick_until_done(sge_client, cid, timeout=300)
    assert sum(r.harvest.requeued for r in reports) > 0
    rows = query(sge_client, select(Batch.id, Batch.reason).order_by(Batch.created_at))
    assert len(rows) >= 2 and rows[0][0] == batch_id
    assert "cancelled" in rows[0][1].lower() or "killed" in rows[0][1].lower(), rows[0][1]
    finished_first = query(
        sge_client,
        select(func.count()).select_from(Attempt).where(
            Attempt.batch_id == batch_id, Attempt.state == AttemptState.COMPLETED
        ),
    )[0][0]
    assert finished_first >= 4  # the tasks that ended before qdel were kept
    lost = query(
        sge_client,
        select(Attempt.job_id, Attempt.reason).where(Attempt.state == AttemptState.LOST),
    )
    assert lost and all(batch_id[:8] in reason for _, reason in lost)
    failures = query(sge_client, select(func.sum(Job.failures)).where(Job.campaign_id == cid))
    assert failures == [(0,)]  # no retry spent
    assert_one_record_per_job(sge_client, cid)


def test_h_rt_keeps_finished_tasks_and_requeues_the_rest(sge_client):
    # h_rt=90 s; 12 tasks of 50 s on 8 slots, with no estimate at first: the farm starts a
    # second wave after the first, which the execd kills (SIGKILL) at 90 s. The second wave
    # cannot end inside the limit however fast the farm starts (with 40 s tasks on an idle
    # machine it did, and the batch ended "done"); the first wave still ends inside it as
    # long as mpirun and the farm start within 40 s.
    spec = executor(resources={"walltime": 90}, walltime_margin=1)
    cid = sge_client.submit(CampaignGraph("walltime", sleepers(12, 50.0), spec, {}))
    sge_client.tick()
    [(batch_id,)] = query(sge_client, select(Batch.id))
    script = (sge_client.home / "batches" / batch_id / "batch.sh").read_text()
    assert "#$ -l h_rt=00:01:30" in script.splitlines()
    reports = tick_until_done(sge_client, cid, timeout=420)
    first = query(sge_client, select(Batch.reason).where(Batch.id == batch_id))[0][0]
    assert first.startswith("walltime reached"), first
    harvested = query(
        sge_client,
        select(func.count()).select_from(Attempt).where(
            Attempt.batch_id == batch_id, Attempt.state == AttemptState.COMPLETED
        ),
    )[0][0]
    assert harvested == 8  # the first wave finished inside the walltime
    lost = query(
        sge_client,
        select(Attempt.reason).where(
            Attempt.batch_id == batch_id, Attempt.state == AttemptState.LOST
        ),
    )
    assert len(lost) == 4 and all("walltime reached" in r for (r,) in lost)
    assert sum(r.harvest.requeued for r in reports) == 4
    failures = query(sge_client, select(func.sum(Job.failures)).where(Job.campaign_id == cid))
    assert failures == [(0,)]  # requeued without spending a retry
    assert_one_record_per_job(sge_client, cid)


def test_four_ticks_at_once_submit_each_job_once(home, cluster):
    client = Client(home)
    cid = client.submit(CampaignGraph("concurrent", sleepers(6, 1.0), executor(), {}))
    client.store.dispose()
    ticks = [
        subprocess.Popen(
            [sys.executable, "-m", "matdx.cli.main", "tick"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [tick.communicate(timeout=120)[0] for tick in ticks]
    print(*outputs, sep="")
    assert sum("launched 6 in 1 batch(es)" in out for out in outputs) == 1, outputs
    assert all(
        "tick skipped" in out or " launched 0 in 0 batch(es)" in out
        for out in outputs
        if "launched 6" not in out
    ), outputs
    client = Client(home)
    try:
        [(batch_id, job_id)] = query(client, select(Batch.id, Batch.scheduler_id))
        sge = client_scheduler()
        assert sge.find_by_name(batch_job_name(batch_id)) in ([job_id], [])  # [] once ended
        accounted_or_queued = subprocess.run(
            ["qstat", "-xml"], capture_output=True, text=True, check=True).stdout
        assert accounted_or_queued.count(f"<JB_name>{batch_job_name(batch_id)}</JB_name>") <= 1
        attempts = query(client, select(Attempt.job_id, Attempt.number))
        assert sorted(n for _, n in attempts) == [1] * 6  # each job claimed once
        tick_until_done(client, cid, timeout=180)
        assert_one_record_per_job(client, cid)
        # one batch job in Grid Engine, ever
        assert accounting(batch_job_name(batch_id)).count("jobnumber") == 1
    finally:
        _delete_batches(client)
        client.store.dispose()


def client_scheduler():
    from matdx.hpc.sites import load_site

    return load_site(SITE).scheduler_adapter()


def test_a_launch_killed_after_qsub_is_abandoned_and_its_job_deleted(sge_client):
    """The tick dies between ``qsub`` and the store update: the batch job is found by its
    name and deleted, and its jobs run in a new batch, once."""
    from matdx.workflows import launch as launching
    from matdx.workflows.engine import executors_of
    from matdx.workflows.launch import _claim
    from matdx.workflows.release import release

    cid = sge_client.submit(CampaignGraph("orphan", sleepers(3, 1.0), executor(), {}))
    release(sge_client.store)
    sge = executors_of(sge_client.store)[f"sge:{SITE}"]
    batch_id = _claim(sge_client.store, sge, [cid], {})

    class Held:
        """qsub, then a hold (so its farm cannot start before the next tick looks), then
        the tick is killed."""

        def __getattr__(self, name):
            return getattr(sge, name)

        def start(self, batch, manifest):
            fields = sge.start(batch, manifest)
            subprocess.run(["qhold", fields["scheduler_id"]], check=True, capture_output=True)
            self.job_id = fields["scheduler_id"]
            raise KeyboardInterrupt  # the tick is killed here

    held = Held()
    with pytest.raises(KeyboardInterrupt):
        launching._start(sge_client.store, held, batch_id)
    with sge_client.store.transaction() as session:
        row = session.get(Batch, batch_id)
        assert row.state == "LAUNCHING" and row.scheduler_id is None
        row.created_at = row.created_at.replace(year=2000)  # past the launch grace period
    tick_until_done(sge_client, cid, timeout=180)
    listed = subprocess.run(["qstat", "-xml"], capture_output=True, text=True, check=True).stdout
    assert f"<JB_job_number>{held.job_id}</JB_job_number>" not in listed  # deleted
    assert (sge_client.home / "batches" / batch_id / "claim").read_text() == "abandoned"
    assert_one_record_per_job(sge_client, cid)
