"""Campaigns on the real single-node Slurm test cluster (issue 4 acceptance points).

The cluster must be running (``bash hpc/testcluster/cluster.sh start --cpus 8``); otherwise
every test here fails with that instruction. Batches run the MPI task farm under ``mpirun``.
Most tests use a SQLite store of their own (each submits real batch jobs for a minute or two;
running them twice would double that); the concurrent-tick test runs on both backends.
The 60-job packing and utilisation numbers are measured by ``benchmarks/slurm_packing.py``.
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
from matdx.workflows.campaign import plan_campaign, read_campaign
from matdx.workflows.executors.batch import batch_job_name
from matdx.workflows.executors.spec import validate_executor
from matdx.workflows.submit import CampaignGraph
from tests.hpc.slurm_helpers import require_cluster
from tests.workflows import jobs

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SITE = "local-slurm-testcluster"


@pytest.fixture
def cluster() -> int:
    return require_cluster(min_cpus=8)


@pytest.fixture
def slurm_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cluster: int):
    home = tmp_path / "home"
    monkeypatch.setenv("MATDX_HOME", str(home))
    monkeypatch.delenv("MATDX_STORE", raising=False)
    client = Client(home)
    yield client
    _cancel_batches(client)
    client.store.dispose()


def _cancel_batches(client: Client) -> None:
    """Cancel the batch jobs a failed test left behind."""
    with client.store.transaction() as session:
        ids = [b for b in session.scalars(select(Batch.scheduler_id)) if b]
    if ids:
        subprocess.run(["scancel", *ids], check=False, capture_output=True)


def executor(**fields) -> dict:
    section = {"type": "slurm", "site": SITE, **fields}
    return validate_executor(section).model_dump(mode="json")


def sleepers(n: int, seconds: float, **resources) -> list[tuple[str, Flow]]:
    flows = []
    for i in range(n):
        one = jobs.sleep(seconds, i)  # distinct inputs: no job reuses another's result
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


def test_relax_static_eos_runs_inside_one_allocation(slurm_client):
    campaign = read_campaign(
        {
            "name": "packed-eos",
            "recipe": ["relax", "static", "eos"],
            "code": "emt",
            "structures": [{"bulk": ["Cu", "Al"]}],
            "settings": {"eos": {"points": 7}},
            "executor": {"type": "slurm", "site": SITE, "resources": {"walltime": "00:10:00"}},
        }
    )
    cid = slurm_client.submit(plan_campaign(campaign))
    reports = tick_until_done(slurm_client, cid, timeout=300)
    assert sum(r.launch.launched for r in reports) == 22  # 11 jobs per structure, once each
    batches = query(slurm_client, select(Batch.id, Batch.n_tasks, Batch.scheduler_id))
    assert len(batches) == 1 and batches[0][1] == 22  # both workflows whole in one batch job
    assert all(r.launch.launched == 0 for r in reports[1:])  # no tick had to start more
    assert_one_record_per_job(slurm_client, cid)


def test_scancel_requeues_unfinished_tasks_into_a_later_batch(slurm_client):
    spec = executor(resources={"walltime": "00:10:00", "cores_per_node": 4})
    cid = slurm_client.submit(CampaignGraph("cancelled", sleepers(12, 6.0), spec, {}))
    slurm_client.tick()
    [(batch_id, job_id)] = query(slurm_client, select(Batch.id, Batch.scheduler_id))
    directory = slurm_client.home / "batches" / batch_id
    deadline = time.monotonic() + 120
    while (directory / "events.jsonl").read_text().count('"end"') < 4 if (
        directory / "events.jsonl"
    ).is_file() else True:
        assert time.monotonic() < deadline, "the first tasks did not finish"
        time.sleep(1)
    subprocess.run(["scancel", job_id], check=True)
    reports = tick_until_done(slurm_client, cid, timeout=300)
    assert sum(r.harvest.requeued for r in reports) > 0
    rows = query(slurm_client, select(Batch.id, Batch.reason).order_by(Batch.created_at))
    assert len(rows) >= 2 and rows[0][0] == batch_id
    assert "cancelled" in rows[0][1] or "CANCELLED" in rows[0][1], rows[0][1]
    lost = query(
        slurm_client,
        select(Attempt.job_id, Attempt.reason).where(Attempt.state == AttemptState.LOST),
    )
    assert lost and all(batch_id[:8] in reason for _, reason in lost)
    failures = query(slurm_client, select(func.sum(Job.failures)).where(Job.campaign_id == cid))
    assert failures == [(0,)]  # no retry spent
    assert_one_record_per_job(slurm_client, cid)


def test_walltime_keeps_finished_tasks_and_requeues_the_rest(slurm_client):
    # --time=1 (one minute); 12 tasks on 8 slots, with no estimate at first: the farm starts a
    # second wave after the first that the walltime kills. Slurm enforces time limits up to
    # ~30 s late, so the tasks take 50 s (not 30): the second wave cannot slip through.
    spec = executor(resources={"walltime": 60}, walltime_margin=1)
    cid = slurm_client.submit(CampaignGraph("walltime", sleepers(12, 50.0), spec, {}))
    slurm_client.tick()
    [(batch_id,)] = query(slurm_client, select(Batch.id))
    script = (slurm_client.home / "batches" / batch_id / "batch.sh").read_text()
    assert "#SBATCH --time=00:01:00" in script
    reports = tick_until_done(slurm_client, cid, timeout=420)
    first = query(slurm_client, select(Batch.reason).where(Batch.id == batch_id))[0][0]
    assert first.startswith("walltime reached"), first
    harvested = query(
        slurm_client,
        select(func.count()).select_from(Attempt).where(
            Attempt.batch_id == batch_id, Attempt.state == AttemptState.COMPLETED
        ),
    )[0][0]
    assert harvested == 8  # the first wave finished inside the walltime
    lost = query(
        slurm_client,
        select(Attempt.reason).where(
            Attempt.batch_id == batch_id, Attempt.state == AttemptState.LOST
        ),
    )
    assert len(lost) == 4 and all("walltime reached" in r for (r,) in lost)
    assert sum(r.harvest.requeued for r in reports) == 4
    failures = query(slurm_client, select(func.sum(Job.failures)).where(Job.campaign_id == cid))
    assert failures == [(0,)]  # requeued without spending a retry
    assert_one_record_per_job(slurm_client, cid)


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
    # the others found the store busy, or (started later) found nothing left to launch
    assert all(
        "tick skipped" in out or " launched 0 in 0 batch(es)" in out
        for out in outputs
        if "launched 6" not in out
    ), outputs
    client = Client(home)
    try:
        [(batch_id, job_id)] = query(client, select(Batch.id, Batch.scheduler_id))
        named = subprocess.run(
            ["squeue", "--noheader", "--states=all", "--format=%i",
             f"--name={batch_job_name(batch_id)}"],
            capture_output=True, text=True, check=True,
        ).stdout.split()
        assert named == [job_id]  # one batch job in Slurm
        attempts = query(client, select(Attempt.job_id, Attempt.number))
        assert sorted(n for _, n in attempts) == [1] * 6  # each job claimed once
        tick_until_done(client, cid, timeout=180)
        assert_one_record_per_job(client, cid)
    finally:
        _cancel_batches(client)
        client.store.dispose()


def test_a_launch_killed_after_sbatch_is_abandoned_and_its_job_cancelled(slurm_client):
    """The tick dies between ``sbatch`` and the store update: the batch job is found by its
    name and cancelled, and its jobs run in a new batch, once."""
    from matdx.workflows.engine import executors_of
    from matdx.workflows.launch import _claim
    from matdx.workflows.release import release

    cid = slurm_client.submit(CampaignGraph("orphan", sleepers(3, 1.0), executor(), {}))
    release(slurm_client.store)
    slurm = executors_of(slurm_client.store)[f"slurm:{SITE}"]
    batch_id = _claim(slurm_client.store, slurm, [cid], {})
    # steps 2 and 3 without the final transaction, with the job held in the queue so that
    # its farm cannot start before the next tick looks at it
    from matdx.workflows import launch as launching

    class Held:
        def __getattr__(self, name):
            return getattr(slurm, name)

        def start(self, batch, manifest):
            fields = slurm.start(batch, manifest)
            subprocess.run(["scontrol", "hold", fields["scheduler_id"]], check=True)
            self.job_id = fields["scheduler_id"]
            raise KeyboardInterrupt  # the tick is killed here

    held = Held()
    with pytest.raises(KeyboardInterrupt):
        launching._start(slurm_client.store, held, batch_id)
    with slurm_client.store.transaction() as session:
        row = session.get(Batch, batch_id)
        assert row.state == "LAUNCHING" and row.scheduler_id is None
        row.created_at = row.created_at.replace(year=2000)  # past the launch grace period
    tick_until_done(slurm_client, cid, timeout=180)
    state = subprocess.run(
        ["squeue", "--noheader", "--states=all", "--format=%T", f"--jobs={held.job_id}"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()
    assert state in ("CANCELLED", ""), state  # the orphan was cancelled (or already purged)
    assert (slurm_client.home / "batches" / batch_id / "claim").read_text() == "abandoned"
    assert_one_record_per_job(slurm_client, cid)


def test_dask_campaign_on_a_slurm_cluster_completes(slurm_client):
    """Jobs as Dask tasks on dask-jobqueue workers that are themselves Slurm jobs."""
    section = {
        "type": "dask",
        "cluster": "slurm",
        "queue": "debug",
        "cores": 1,
        "processes": 1,
        "memory": "1GB",
        "walltime": "00:05:00",
        "interface": "lo",
        "workers": 2,
    }
    spec = validate_executor(section).model_dump(mode="json")
    first = jobs.add(1, 2)
    second = jobs.add(first.output, 10)
    flows = [("chain", Flow([first, second])), *sleepers(3, 1.0)]
    cid = slurm_client.submit(CampaignGraph("dask-slurm", flows, spec, {}))
    tick_until_done(slurm_client, cid, timeout=300)
    assert_one_record_per_job(slurm_client, cid)
    [(batch_id,)] = query(slurm_client, select(Batch.id))
    events = (slurm_client.home / "batches" / batch_id / "events.jsonl").read_text()
    assert '"mode": "dask"' in events and '"slots": 2' in events
    outputs = dict(query(slurm_client, select(Record.job_id, Record.output)))
    assert outputs[second.id] == 13
