"""Poll and harvest: turn what batches left in run directories into records and job states.

For every active batch the farm's event log says which tasks ended; each ended task's
``result.json`` becomes one record (completed or failed attempt), its output files become
artifacts, and the job moves to COMPLETED or ERRORED, all in one transaction per group of
results. A batch that is over (its farm ended, or died) has its remaining tasks requeued
without spending a retry. Running the same harvest twice is harmless: a job is harvested only
while it is RUNNING with the attempt the result names, and the store allows one record per
job attempt.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.orm import Session

from matdx.hpc.farm import ABANDONED, batch_claimant, claim_batch, read_events
from matdx.store.models import (
    Artifact,
    Attempt,
    AttemptState,
    Batch,
    BatchState,
    Campaign,
    Job,
    JobEdge,
    JobState,
    ProvenanceEdge,
    Record,
    RecordArtifact,
    utcnow,
)
from matdx.store.records import ArtifactReference
from matdx.store.store import Store
from matdx.workflows.executors.base import BatchStatus, Executor
from matdx.workflows.files import iter_artifacts
from matdx.workflows.records import build_record
from matdx.workflows.rundir import JOB_FILE, RESULT_FILE, read_json
from matdx.workflows.states import move

log = logging.getLogger(__name__)

__all__ = ["HarvestReport", "batch_progress", "harvest"]

CHUNK = 500  # results per transaction
# A launch interrupted before its farm started is given up after this long.
LAUNCH_GRACE = timedelta(seconds=5)
# Attempts lost with their batch (killed, walltime) do not spend retries, up to this many.
MAX_LOST = 10


@dataclass
class HarvestReport:
    completed: int = 0
    errored: int = 0
    requeued: int = 0
    batches_ended: int = 0
    busy: dict[str, int] = field(default_factory=dict)  # batch id -> slots still occupied


def batch_progress(batch: Batch) -> tuple[dict[str, str], str | None]:
    """Tasks that ended (id -> farm status), and why the farm finished (None while it runs)."""
    ended: dict[str, str] = {}
    finished = None
    for event in read_events(batch.directory):
        if event["event"] == "end":
            ended[event["task"]] = event["status"]
        elif event["event"] == "farm-end":
            finished = event.get("reason", "finished")
    return ended, finished


def harvest(store: Store, executors: Mapping[str, Executor]) -> HarvestReport:
    """Poll every active batch and harvest what it finished."""
    report = HarvestReport()
    with store.transaction() as session:
        batches = list(
            session.scalars(
                select(Batch).where(Batch.state.in_([BatchState.LAUNCHING, BatchState.ACTIVE]))
            )
        )
    by_executor: dict[str, list[Batch]] = {}
    for batch in batches:
        by_executor.setdefault(batch.executor, []).append(batch)
    for name, group in by_executor.items():
        executor = executors[name]
        launching = [b for b in group if b.state == BatchState.LAUNCHING]
        for batch in launching:
            _settle_launch(store, executor, batch)
        statuses = executor.poll([b for b in group if b.state == BatchState.ACTIVE])
        for batch in group:
            status = statuses.get(batch.id, BatchStatus(alive=False, reason="abandoned launch"))
            _harvest_batch(store, batch, status, report)
    return report


def _settle_launch(store: Store, executor: Executor, batch: Batch) -> None:
    """Decide a batch left LAUNCHING by an interrupted tick: adopt it if its farm started,
    else claim it as abandoned so that the farm can never start later.

    A batch-queue launch interrupted after the submission left a batch job the store does
    not know: an abandoned batch's job is cancelled (found by its name), an adopted batch gets
    its job id from the farm's start event.
    """
    created = batch.created_at if batch.created_at.tzinfo else batch.created_at.replace(tzinfo=UTC)
    if datetime.now(UTC) - created < LAUNCH_GRACE and batch_claimant(batch.directory) is None:
        return  # the process that launched it may be the farm's parent still starting it
    Path(batch.directory).mkdir(parents=True, exist_ok=True)  # killed before it was made
    if claim_batch(batch.directory, ABANDONED) or batch_claimant(batch.directory) == ABANDONED:
        with store.transaction() as session:
            session.get(Batch, batch.id).reason = "launch interrupted; abandoned"
        executor.abandon(batch)
        return
    found = executor.adopt(batch)
    with store.transaction() as session:
        row = session.get(Batch, batch.id)
        row.state = BatchState.ACTIVE
        batch.state = BatchState.ACTIVE
        for key, value in found.items():
            setattr(row, key, value)
            setattr(batch, key, value)


def _harvest_batch(store: Store, batch: Batch, status: BatchStatus, report: HarvestReport) -> None:
    ended, finished = batch_progress(batch)
    # A farm stopped by a signal (walltime, scancel) is over, but the batch is ended only once
    # the executor says why, so that the requeued attempts and the report name the cause.
    stopped = finished is not None and finished.startswith("signal") and status.alive
    over = (finished is not None and not stopped) or not status.alive
    if batch.state == BatchState.LAUNCHING and batch_claimant(batch.directory) != ABANDONED:
        return  # still starting
    with store.transaction() as session:
        running = session.execute(
            select(Job.id, Job.attempt, Job.run_dir).where(
                Job.batch_id == batch.id, Job.state == JobState.RUNNING
            )
        ).all()
    report.busy[batch.id] = min(batch.workers, batch.n_tasks - len(ended))
    todo = []
    lost = []
    # A worker that "crashed" while its allocation was being taken away (walltime, scancel,
    # node failure) was killed with it: the task is requeued, not failed.
    killed = over and status.infrastructure_failure
    for job_id, attempt, run_dir in running:
        result_file = Path(run_dir) / RESULT_FILE
        if job_id in ended or over:
            crashed = ended.get(job_id, "").startswith("crashed")
            if result_file.is_file() or (crashed and not killed):
                todo.append((job_id, attempt, run_dir))
            elif over:
                lost.append(job_id)
    for start in range(0, len(todo), CHUNK):
        chunk = [
            (job_id, attempt, run_dir, ended.get(job_id))
            for job_id, attempt, run_dir in todo[start : start + CHUNK]
        ]
        with store.transaction() as session:
            _harvest_chunk(store, session, batch, chunk, report)
    if lost:
        if status.infrastructure_failure or finished is None or finished.startswith("signal"):
            reason = f"batch {batch.id[:8]} ended: {status.reason or finished or 'unknown reason'}"
        else:
            reason = (
                f"not run in batch {batch.id[:8]} ({finished}): a job it depends on did not "
                "complete, or it would not have finished before the walltime"
            )
        with store.transaction() as session:
            _requeue(session, lost, reason)
        report.requeued += len(lost)
    if over:
        with store.transaction() as session:
            row = session.get(Batch, batch.id)
            row.state = BatchState.ENDED
            row.ended_at = utcnow()
            row.reason = row.reason or (
                status.reason if status.infrastructure_failure else finished or status.reason
            )
        report.batches_ended += 1
        report.busy.pop(batch.id, None)


def _requeue(session: Session, job_ids: list[str], reason: str) -> None:
    """Put jobs whose attempt never produced a result back in line, without spending a retry.

    They go back to WAITING: the release step resolves their inputs again, so a job packed
    with a parent that did not complete waits for it.
    """
    jobs = list(session.scalars(select(Job).where(Job.id.in_(job_ids))))
    for job in jobs:
        session.execute(
            Attempt.__table__.update()
            .where(Attempt.job_id == job.id, Attempt.number == job.attempt)
            .values(state=AttemptState.LOST, reason=reason, finished_at=utcnow())
        )
        if job.requeues + 1 > MAX_LOST:  # a job that keeps taking its batch down with it
            move(
                session,
                [job.id],
                JobState.RUNNING,
                JobState.FAILED,
                batch_id=None,
                requeues=job.requeues + 1,
                reason=f"lost {job.requeues + 1} times without a result; last: {reason}",
            )
            continue
        move(
            session,
            [job.id],
            JobState.RUNNING,
            JobState.WAITING,
            requeues=job.requeues + 1,
            batch_id=None,
            resolved_inputs=None,
            input_hash=None,
            reason=f"requeued: {reason}",
        )


def _ingest_artifacts(store: Store, output: Any, run_dir: Path) -> list[ArtifactReference]:
    """Copy the files an output names into the artifact store; strip their local paths."""
    references: list[ArtifactReference] = []
    names: set[str] = set()
    for payload in iter_artifacts(output):
        path = payload.pop("path", None)
        if path is None:
            continue
        source = Path(path) if Path(path).is_absolute() else run_dir / path
        sha256, size = store.artifacts.put_file(source)
        if sha256 != payload["sha256"]:
            raise OSError(f"{source}: changed after the job returned it (sha256 differs)")
        name, copy = payload["name"], 2
        while name in names:  # two files returned under one name: keep both
            name, copy = f"{payload['name']}.{copy}", copy + 1
        names.add(name)
        payload["name"] = name
        references.append(
            ArtifactReference(
                role="output",
                name=name,
                media_type=payload["media_type"],
                size=size,
                sha256=sha256,
            )
        )
    return references


def _read_result(
    job_id: str, attempt: int, run_dir: Path, farm_status: str | None
) -> dict[str, Any] | None:
    """The attempt's result, a failure for a worker that died, or None for a stale file."""
    result_file = run_dir / RESULT_FILE
    if result_file.is_file():
        result = read_json(result_file)
        if result.get("job_id") != job_id or result.get("attempt") != attempt:
            return None  # a result of another attempt; never harvest it as this one
        return result
    return {
        "job_id": job_id,
        "attempt": attempt,
        "status": "failed",
        "output": None,
        "response": None,
        "input_hash": None,
        "error": {
            "type": "WorkerDied",
            "message": farm_status,
            "last_line": f"worker process died: {farm_status}",
            "kind": "science",
            "correction": None,
        },
    }


def _graph_change(result: dict[str, Any]) -> dict[str, Any] | None:
    response = result.get("response") or None
    if response and (
        response.get("addition")
        or response.get("detour")
        or response.get("replace")
        or response.get("stop_children")
    ):
        return response
    return None


def _record_row(record: Any, result: dict[str, Any]) -> dict[str, Any]:
    """A ``records`` row: the store derives its search columns and index rows from the
    document when it is inserted (``matdx.store.indexing``)."""
    return {"document": record.model_dump(mode="json"), "output": result.get("output"),
            "created_at": utcnow()}


def _record_of(result: dict[str, Any], *, store: Store, job: Job, campaign: Campaign,
               inputs: Any, run_dir: Path, record_id: str, parents: list[str],
               retry_of: str | None, batch: Batch) -> tuple[Any, list[ArtifactReference]]:
    """The validated record of one attempt, and its output files, now in the artifact store."""
    references = _ingest_artifacts(store, result.get("output"), run_dir)
    record = build_record(
        record_id=record_id, job=job, campaign=campaign, result=result, inputs=inputs,
        artifacts=references, parents=parents, retry_of=retry_of,
        corrections=list(job.corrections or []), batch_id=batch.id,
        scheduler_job_id=batch.scheduler_id, run_dir=str(run_dir),
    )
    return record, references


def _harvest_chunk(
    store: Store,
    session: Session,
    batch: Batch,
    items: list[tuple[str, int, str, str | None]],
    report: HarvestReport,
) -> None:
    """Harvest a group of finished attempts with a fixed number of statements.

    ``items`` holds (job id, attempt, run dir, farm status). Everything, records and job
    states alike, is written in the caller's single transaction.
    """
    ids = [job_id for job_id, *_ in items]
    jobs = {
        job.id: job
        for job in session.scalars(
            select(Job).where(Job.id.in_(ids), Job.state == JobState.RUNNING)
        )
    }
    results: dict[str, dict[str, Any]] = {}
    for job_id, attempt, run_dir, farm_status in items:
        job = jobs.get(job_id)
        if job is None or job.attempt != attempt:
            continue
        result = _read_result(job_id, attempt, Path(run_dir), farm_status)
        if result is not None:
            results[job_id] = result
    if not results:
        return
    record_ids = {job_id: str(uuid.uuid4()) for job_id in results}
    campaigns = {
        c.id: c
        for c in session.scalars(
            select(Campaign).where(Campaign.id.in_({jobs[j].campaign_id for j in results}))
        )
    }
    parents: dict[str, set[str]] = {job_id: set() for job_id in results}
    for child, parent, parent_record in session.execute(
        select(JobEdge.child_id, JobEdge.parent_id, Job.record_id)
        .join(Job, Job.id == JobEdge.parent_id)
        .where(JobEdge.child_id.in_(list(results)))
    ):
        found = record_ids.get(parent) if parent in results else parent_record
        if found:
            parents[child].add(found)
    previous: dict[str, str] = {}
    for job_id, number, record_id in session.execute(
        select(Attempt.job_id, Attempt.number, Attempt.record_id)
        .where(Attempt.job_id.in_(list(results)), Attempt.record_id.is_not(None))
        .order_by(Attempt.number)
    ):
        if number < jobs[job_id].attempt:
            previous[job_id] = record_id

    records, links, edges, attempts, completed, errored = [], [], [], [], [], []
    artifacts: dict[str, dict[str, Any]] = {}
    for job_id, result in results.items():
        job, run_dir = jobs[job_id], Path(jobs[job_id].run_dir)
        job_file = run_dir / JOB_FILE
        inputs = read_json(job_file)["inputs"] if job_file.is_file() else job.inputs

        context = {
            "store": store, "job": job, "campaign": campaigns[job.campaign_id],
            "inputs": inputs, "run_dir": run_dir, "record_id": record_ids[job_id],
            "parents": sorted(parents[job_id]), "retry_of": previous.get(job_id),
            "batch": batch,
        }
        try:
            record, references = _record_of(result, **context)
        except (OSError, ValueError, TypeError, KeyError) as error:
            # An output the store cannot take (a file gone or changed, a value the record
            # schema rejects) fails this attempt; it must not stop the tick.
            result = {**result, "status": "failed", "output": None, "response": None,
                      "error": {"type": type(error).__name__, "message": str(error),
                                "last_line": f"harvest: {type(error).__name__}: {error}",
                                "kind": "science", "correction": None}}
            results[job_id] = result
            try:
                record, references = _record_of(result, **context)
            except (OSError, ValueError, TypeError, KeyError) as again:
                # Not even the failed attempt can be recorded (e.g. its campaign's governance
                # no longer validates): the job stays as it is, with its result on disk, and
                # the rest of the tick goes on.
                log.error("job %s: result kept in %s, not harvested: %s", job_id, run_dir, again)
                continue
        records.append(_record_row(record, result))
        for reference in references:
            artifacts[reference.sha256] = {
                "sha256": reference.sha256,
                "size": reference.size,
                "media_type": reference.media_type,
                "created_at": utcnow(),
            }
            links.append(
                {
                    "record_id": record.record_id,
                    "role": reference.role,
                    "name": reference.name,
                    "sha256": reference.sha256,
                }
            )
        edges += [
            {"parent_id": p, "child_id": record.record_id, "relation": "input"}
            for p in sorted(parents[job_id])
        ]
        if job_id in previous:
            edges.append(
                {
                    "parent_id": previous[job_id],
                    "child_id": record.record_id,
                    "relation": "retry_of",
                }
            )
        error = result.get("error")
        attempts.append(
            {
                "b_job": job_id,
                "b_number": job.attempt,
                "b_record": record.record_id,
                "b_state": AttemptState.COMPLETED
                if result["status"] == "completed"
                else AttemptState.FAILED,
                "b_host": record.run.host,
                "b_started": record.run.started_at,
                "b_finished": record.run.finished_at,
                "b_hash": record.input_hash,
                "b_error": error,
                "b_reason": (error or {}).get("last_line", ""),
            }
        )
        if result["status"] == "completed":
            completed.append(
                {
                    "b_id": job_id,
                    "b_record": record.record_id,
                    "b_hash": record.input_hash,
                    "b_response": _graph_change(result),
                }
            )
        else:
            spends_retry = (error or {}).get("kind", "science") != "infrastructure" and not (
                error or {}
            ).get("correction")
            errored.append(
                {
                    "b_id": job_id,
                    "b_failures": job.failures + int(spends_retry),
                    "b_reason": (error or {}).get("last_line", "failed"),
                }
            )

    known = set(session.scalars(select(Artifact.sha256).where(Artifact.sha256.in_(artifacts))))
    new_artifacts = [row for sha, row in artifacts.items() if sha not in known]
    if new_artifacts:
        session.execute(insert(Artifact), new_artifacts)
    if not records:
        return
    session.execute(insert(Record), records)
    if links:
        session.execute(insert(RecordArtifact), links)
    if edges:
        session.execute(insert(ProvenanceEdge), edges)
    table = Attempt.__table__
    session.execute(
        table.update()
        .where(table.c.job_id == bindparam("b_job"), table.c.number == bindparam("b_number"))
        .values(
            state=bindparam("b_state"),
            record_id=bindparam("b_record"),
            host=bindparam("b_host"),
            started_at=bindparam("b_started"),
            finished_at=bindparam("b_finished"),
            input_hash=bindparam("b_hash"),
            error=bindparam("b_error"),
            reason=bindparam("b_reason"),
        ),
        attempts,
    )
    jobs_table, now = Job.__table__, utcnow()
    running = (jobs_table.c.id == bindparam("b_id")) & (jobs_table.c.state == JobState.RUNNING)
    if completed:
        session.execute(
            jobs_table.update()
            .where(running)
            .values(
                state=JobState.COMPLETED,
                record_id=bindparam("b_record"),
                input_hash=bindparam("b_hash"),
                pending_response=bindparam("b_response"),
                reason="",
                updated_at=now,
            ),
            completed,
        )
    if errored:
        session.execute(
            jobs_table.update()
            .where(running)
            .values(
                state=JobState.ERRORED,
                record_id=None,
                failures=bindparam("b_failures"),
                reason=bindparam("b_reason"),
                updated_at=now,
            ),
            errored,
        )
    report.completed += len(completed)
    report.errored += len(errored)
