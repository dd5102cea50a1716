"""The tick engine end to end, with real task-farm processes on this machine."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import func, select

from matdx.store.models import (
    Attempt,
    AttemptState,
    Batch,
    Job,
    JobState,
    ProvenanceEdge,
    Record,
    RecordArtifact,
)
from matdx.workflows import Flow
from matdx.workflows.serialization import decode
from matdx.workflows.submit import CampaignGraph
from tests.workflows import jobs

LOCAL = {"type": "local", "workers": 2}


def campaign(*flows: Flow, name: str = "test") -> CampaignGraph:
    return CampaignGraph(name, [("test", flow) for flow in flows], LOCAL, {})


def outputs(client, campaign_id: str) -> dict[str, object]:
    """Decoded output of every completed job, by job id."""
    with client.store.transaction() as session:
        rows = session.execute(
            select(Job.id, Record.output)
            .join(Record, Record.record_id == Job.record_id)
            .where(Job.campaign_id == campaign_id, Job.state == JobState.COMPLETED)
        ).all()
    return {job_id: decode(output) for job_id, output in rows}


def states(client, campaign_id: str) -> dict[str, str]:
    with client.store.transaction() as session:
        return dict(
            session.execute(select(Job.id, Job.state).where(Job.campaign_id == campaign_id)).all()
        )


def count(client, model) -> int:
    with client.store.transaction() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_chain_and_fan_in_run_to_completion(client):
    a = jobs.add(1, 2)
    b = jobs.add(a.output, 10)
    c = jobs.total([a.output, b.output, 5])
    cid = client.submit(campaign(Flow([a, b, c])))
    [status] = client.run(cid, poll_s=0.1, timeout_s=60)
    assert status.counts == {"COMPLETED": 3}
    result = outputs(client, cid)
    assert (result[a.id], result[b.id], result[c.id]) == (3, 13, 21)
    # The whole chain was packed into one batch: no tick was needed between the jobs.
    assert count(client, Batch) == 1


def test_numpy_outputs_and_artifacts_flow_between_jobs(client):
    stats = jobs.array_stats([1.0, 2.0, 3.0])
    writer = jobs.write_file("hello artifacts")
    reader = jobs.read_file(writer.output["file"])
    cid = client.submit(campaign(Flow([stats, writer, reader])))
    client.run(cid, poll_s=0.1, timeout_s=60)
    result = outputs(client, cid)
    assert result[stats.id]["mean"] == 2.0
    assert result[stats.id]["squares"].tolist() == [1.0, 4.0, 9.0]
    assert result[reader.id] == "hello artifacts"
    stored = result[writer.id]["file"]
    assert stored.path is None  # the store keeps content, not the run directory's path
    assert client.store.artifacts.path(stored.sha256).read_text() == "hello artifacts"
    with client.store.transaction() as session:
        link = session.scalars(select(RecordArtifact)).one()
    assert (link.role, link.name, link.sha256) == ("output", "data.txt", stored.sha256)


def test_failing_job_is_retried_then_failed_while_siblings_complete(client):
    bad = jobs.fail("the input deck is broken")
    child = jobs.add(bad.output, 1)
    grandchild = jobs.add(child.output, 1)
    sibling = jobs.add(20, 22)
    cid = client.submit(campaign(Flow([bad, child, grandchild]), Flow([sibling])))
    [status] = client.run(cid, poll_s=0.1, timeout_s=60)
    assert status.done
    final = states(client, cid)
    assert final[bad.id] == JobState.FAILED
    assert final[sibling.id] == JobState.COMPLETED
    assert final[child.id] == final[grandchild.id] == JobState.WAITING  # never started
    assert status.blocked == 2  # both wait, directly or not, on the failed job
    [failure] = status.failures
    assert failure.reason == "RuntimeError: the input deck is broken"
    assert failure.attempts == 2  # retries=1: one retry after the first failure
    with client.store.transaction() as session:
        attempts = session.scalars(select(Attempt).where(Attempt.job_id == bad.id)).all()
        never = session.scalar(
            select(func.count())
            .select_from(Record)
            .where(Record.job_id.in_([child.id, grandchild.id]))
        )
    assert [a.state for a in attempts] == [AttemptState.FAILED, AttemptState.FAILED]
    assert never == 0


def test_retry_makes_a_new_attempt_and_record_linked_to_the_failed_one(client, tmp_path):
    flaky = jobs.fail_until(str(tmp_path / "calls"), 2)
    cid = client.submit(campaign(Flow([flaky])))
    client.run(cid, poll_s=0.1, timeout_s=60)
    assert outputs(client, cid)[flaky.id] == 2
    with client.store.transaction() as session:
        records = session.scalars(
            select(Record).where(Record.job_id == flaky.id).order_by(Record.attempt)
        ).all()
        edges = session.scalars(select(ProvenanceEdge)).all()
    assert [(r.attempt, r.status) for r in records] == [(1, "failed"), (2, "completed")]
    assert records[0].document["run"]["error"]["last_line"] == "ValueError: call 1 fails"
    assert [(e.parent_id, e.child_id, e.relation) for e in edges] == [
        (records[0].record_id, records[1].record_id, "retry_of")
    ]
    assert records[1].document["retry_of"] == records[0].record_id


def test_responses_replace_detour_add_and_stop(client):
    grow = jobs.grow_until(0, 3)
    after_grow = jobs.add(grow.output, 1)
    detour = jobs.with_detour(5)
    after_detour = jobs.add(detour.output, 1)
    addition = jobs.with_addition(7)
    stop = jobs.stop_below(9)
    stopped = jobs.add(stop.output, 1)
    stopped_below = jobs.add(stopped.output, 1)
    cid = client.submit(
        campaign(
            Flow([grow, after_grow]),
            Flow([detour, after_detour]),
            Flow([addition]),
            Flow([stop, stopped, stopped_below]),
        )
    )
    [status] = client.run(cid, poll_s=0.1, timeout_s=90)
    assert status.done
    result = outputs(client, cid)
    final = states(client, cid)
    # replace: grow_until(0) -> grow_until(1) -> ... -> 3; references to grow see 3
    assert result[after_grow.id] == 4
    # detour: the child waited for add(5, 100) and still sees the detour job's own output
    assert result[after_detour.id] == 6
    with client.store.transaction() as session:
        names = {j.id: j.name for j in session.scalars(select(Job).where(Job.campaign_id == cid))}
        detour_job = [j for j, n in names.items() if n == "add" and result.get(j) == 105]
        added = [j for j, n in names.items() if n == "add" and result.get(j) == 1007]
        grew = [j for j, n in names.items() if n == "grow_until"]
    assert detour_job and added and len(grew) == 4
    assert final[stopped.id] == final[stopped_below.id] == JobState.CANCELLED
    assert status.counts.get("FAILED", 0) == 0


def test_second_submission_reuses_results_unless_forced(client):
    def graph():
        a = jobs.add(2, 3)
        return campaign(Flow([a, jobs.add(a.output, 1)]), name="same")

    first = client.submit(graph())
    client.run(first, poll_s=0.1, timeout_s=60)
    records, batches = count(client, Record), count(client, Batch)

    second = client.submit(graph())
    [status] = client.run(second, poll_s=0.1, timeout_s=60)
    assert status.counts == {"COMPLETED": 2}
    assert (count(client, Record), count(client, Batch)) == (records, batches)
    with client.store.transaction() as session:
        reused = session.scalars(select(Job.reused_from).where(Job.campaign_id == second)).all()
    assert all(reused)

    forced = client.submit(graph(), force=True)
    client.run(forced, poll_s=0.1, timeout_s=60)
    assert count(client, Record) == records + 2


def test_ticks_after_completion_change_nothing(client):
    a = jobs.add(1, 1)
    cid = client.submit(campaign(Flow([a, jobs.add(a.output, 1)])))
    client.run(cid, poll_s=0.1, timeout_s=60)
    before = (count(client, Record), count(client, Attempt), count(client, Batch))
    for _ in range(3):
        report = client.tick()
        assert report.harvest.completed == report.launch.launched == 0
    assert (count(client, Record), count(client, Attempt), count(client, Batch)) == before


def test_interrupted_launch_is_abandoned_and_requeued(client):
    """A tick killed after claiming jobs but before starting the farm loses nothing."""
    from matdx.workflows.engine import executors_of
    from matdx.workflows.launch import _claim
    from matdx.workflows.release import release

    a = jobs.add(1, 2)
    cid = client.submit(campaign(Flow([a, jobs.add(a.output, 3)])))
    release(client.store)
    executor = executors_of(client.store, client.executors)["local"]
    batch_id = _claim(client.store, executor, [cid], {})  # step 1 only, then "killed"
    with client.store.transaction() as session:
        session.get(Batch, batch_id).created_at = session.get(Batch, batch_id).created_at.replace(
            year=2000
        )  # older than the launch grace period
    assert set(states(client, cid).values()) == {JobState.RUNNING}
    [status] = client.run(cid, poll_s=0.1, timeout_s=60)
    assert status.counts == {"COMPLETED": 2}
    with client.store.transaction() as session:
        abandoned = session.get(Batch, batch_id)
        lost = session.scalars(select(Attempt.state).where(Attempt.batch_id == batch_id)).all()
        records = session.scalar(select(func.count()).select_from(Record))
    assert abandoned.state == "ENDED" and "abandoned" in abandoned.reason
    assert (Path(abandoned.directory) / "claim").read_text() == "abandoned"
    assert lost == [AttemptState.LOST, AttemptState.LOST]
    assert records == 2


def test_job_runs_from_its_run_directory_without_a_store(client, tmp_path):
    """``python -m matdx.workflows.run RUNDIR`` needs only the run directory."""
    import subprocess
    import sys

    a = jobs.add(1, 2)
    b = jobs.add(a.output, 10)
    cid = client.submit(campaign(Flow([a, b])))
    client.run(cid, poll_s=0.1, timeout_s=60)
    with client.store.transaction() as session:
        run_dirs = dict(session.execute(select(Job.id, Job.run_dir)).all())
    spec = json.loads((Path(run_dirs[b.id]) / "job.json").read_text())
    assert spec["pending_parents"] == {}  # the farm resolved the parent's output in place
    copy = tmp_path / "elsewhere"
    copy.mkdir()
    (copy / "job.json").write_text(json.dumps(spec))
    done = subprocess.run(
        [sys.executable, "-m", "matdx.workflows.run", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads((copy / "result.json").read_text())
    assert result["status"] == "completed" and result["output"] == 13
    assert result["input_hash"] == spec["input_hash"]


def test_a_resource_correction_changes_the_next_attempts_resources(client, tmp_path):
    needy = jobs.resources_after_memory_error(str(tmp_path / "marker"))
    cid = client.submit(campaign(Flow([needy])))
    client.run(cid, poll_s=0.1, timeout_s=60)
    assert outputs(client, cid)[needy.id] == {"cores": 1, "estimate_s": 20.0}
    shown = client.show(needy.id)
    assert shown["failures"] == 0  # a correction does not spend a retry
    [correction] = shown["corrections"]
    assert correction["resources_update"] == {"ranks_factor": 0.5, "walltime_factor": 2.0}


def test_a_job_wider_than_any_batch_fails_with_the_reason(client):
    too_wide, fine = jobs.wide(), jobs.add(1, 2)
    cid = client.submit(campaign(Flow([too_wide]), Flow([fine])))
    [status] = client.run(cid, poll_s=0.1, timeout_s=60)
    assert states(client, cid) == {too_wide.id: JobState.FAILED, fine.id: JobState.COMPLETED}
    [failure] = status.failures
    assert "needs 64 cores" in failure.reason


def test_a_dependent_whose_parents_result_was_lost_is_not_recorded_without_it(home):
    """A power cut after a dependent ran may lose what the parent's farm had not made durable
    (its ``result.json`` and ``end`` event, and the farm's end): harvest then records neither
    the parent nor anything below it, and the chain runs again with whole provenance."""
    import time

    from matdx.client import Client
    from matdx.hpc.farm import EVENTS_FILE, process_start_time, read_events
    from matdx.workflows.engine import tick
    from matdx.workflows.executors.local import LocalExecutor

    client = Client(home, executors={"local": LocalExecutor(2, warm=False)})
    a = jobs.add(1, 2)
    b = jobs.add(a.output, 10)
    c = jobs.add(b.output, 100)
    cid = client.submit(campaign(Flow([a, b, c])))
    assert tick(client.store, executors=client.executors).launch.launched == 3  # one batch
    with client.store.transaction() as session:
        batch = session.scalars(select(Batch)).one()
        run_dirs = dict(session.execute(select(Job.id, Job.run_dir)).all())
    deadline = time.monotonic() + 60
    while not any(e["event"] == "farm-end" for e in read_events(batch.directory)):
        assert time.monotonic() < deadline, "the farm did not finish"
        time.sleep(0.05)
    farm = next(e for e in read_events(batch.directory) if e["event"] == "farm-start")
    while process_start_time(farm["pid"]) is not None:
        assert time.monotonic() < deadline, "the farm did not exit"
        time.sleep(0.05)
    # The machine "crashed": the parent's result and the log's tail never reached the disk.
    (Path(run_dirs[a.id]) / "result.json").unlink()
    kept = [e for e in read_events(batch.directory)
            if e["event"] != "farm-end" and not (e["event"] == "end" and e["task"] == a.id)]
    (Path(batch.directory) / EVENTS_FILE).write_text("".join(json.dumps(e) + "\n" for e in kept))
    assert (Path(run_dirs[b.id]) / "result.json").exists()  # the dependents' results survived

    report = tick(client.store, executors=client.executors, launch_jobs=False)
    assert report.harvest.completed == 0 and report.harvest.requeued == 3
    assert count(client, Record) == 0
    assert states(client, cid) == {a.id: JobState.READY, b.id: JobState.WAITING,
                                   c.id: JobState.WAITING}
    with client.store.transaction() as session:
        lost = dict(session.execute(select(Attempt.job_id, Attempt.reason)).all())
    assert "no recorded result" in lost[b.id] and "no recorded result" in lost[c.id]

    [status] = client.run(cid, poll_s=0.05, timeout_s=60)
    assert status.counts == {"COMPLETED": 3}
    assert outputs(client, cid)[c.id] == 113
    with client.store.transaction() as session:
        record_of = dict(session.execute(select(Job.id, Job.record_id)).all())
        edges = set(session.execute(
            select(ProvenanceEdge.parent_id, ProvenanceEdge.child_id)
            .where(ProvenanceEdge.relation == "input")).all())
    assert edges == {(record_of[a.id], record_of[b.id]), (record_of[b.id], record_of[c.id])}
    client.store.dispose()
