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

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
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

__all__ = ["HarvestReport", "batch_progress", "harvest"]

CHUNK = 200
# A launch interrupted before its farm started is given up after this long.
LAUNCH_GRACE = timedelta(seconds=5)


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
            _settle_launch(store, batch)
        statuses = executor.poll([b for b in group if b.state == BatchState.ACTIVE])
        for batch in group:
            status = statuses.get(batch.id, BatchStatus(alive=False, reason="abandoned launch"))
            _harvest_batch(store, batch, status, report)
    return report


def _settle_launch(store: Store, batch: Batch) -> None:
    """Decide a batch left LAUNCHING by an interrupted tick: adopt it if its farm started,
    else claim it as abandoned so that the farm can never start later."""
    created = batch.created_at if batch.created_at.tzinfo else batch.created_at.replace(tzinfo=UTC)
    if datetime.now(UTC) - created < LAUNCH_GRACE and batch_claimant(batch.directory) is None:
        return  # the process that launched it may be the farm's parent still starting it
    if claim_batch(batch.directory, ABANDONED) or batch_claimant(batch.directory) == ABANDONED:
        with store.transaction() as session:
            session.get(Batch, batch.id).reason = "launch interrupted; abandoned"
        return
    with store.transaction() as session:
        row = session.get(Batch, batch.id)
        row.state = BatchState.ACTIVE
        batch.state = BatchState.ACTIVE


def _harvest_batch(store: Store, batch: Batch, status: BatchStatus, report: HarvestReport) -> None:
    ended, finished = batch_progress(batch)
    over = finished is not None or not status.alive
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
    for job_id, attempt, run_dir in running:
        result_file = Path(run_dir) / RESULT_FILE
        if job_id in ended or over:
            if result_file.is_file() or ended.get(job_id, "").startswith("crashed"):
                todo.append((job_id, attempt, run_dir))
            elif over:
                lost.append(job_id)
    for start in range(0, len(todo), CHUNK):
        with store.transaction() as session:
            for job_id, attempt, run_dir in todo[start : start + CHUNK]:
                _harvest_one(
                    store, session, batch, job_id, attempt, Path(run_dir), ended.get(job_id), report
                )
    if lost:
        if finished is not None:
            reason = f"not run: a job it depends on did not complete in batch {batch.id[:8]}"
        else:
            reason = f"batch {batch.id[:8]} ended: {status.reason or 'unknown reason'}"
        with store.transaction() as session:
            _requeue(session, lost, reason)
        report.requeued += len(lost)
    if over:
        with store.transaction() as session:
            row = session.get(Batch, batch.id)
            row.state = BatchState.ENDED
            row.ended_at = utcnow()
            row.reason = row.reason or finished or status.reason
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


def _ingest_artifacts(
    store: Store, session: Session, output: Any, run_dir: Path
) -> list[ArtifactReference]:
    """Copy the files an output names into the artifact store; strip their local paths."""
    references = []
    for payload in iter_artifacts(output):
        path = payload.pop("path", None)
        if path is None:
            continue
        source = Path(path) if Path(path).is_absolute() else run_dir / path
        sha256, size = store.artifacts.put_file(source)
        if sha256 != payload["sha256"]:
            raise OSError(f"{source}: changed after the job returned it (sha256 differs)")
        if session.get(Artifact, sha256) is None:
            session.add(Artifact(sha256=sha256, size=size, media_type=payload["media_type"]))
            session.flush()
        references.append(
            ArtifactReference(
                role="output",
                name=payload["name"],
                media_type=payload["media_type"],
                size=size,
                sha256=sha256,
            )
        )
    return references


def _harvest_one(
    store: Store,
    session: Session,
    batch: Batch,
    job_id: str,
    attempt: int,
    run_dir: Path,
    farm_status: str | None,
    report: HarvestReport,
) -> None:
    job = session.get(Job, job_id)
    if job is None or job.state != JobState.RUNNING or job.attempt != attempt:
        return
    result_file = run_dir / RESULT_FILE
    if result_file.is_file():
        result = read_json(result_file)
        if result.get("job_id") != job_id or result.get("attempt") != attempt:
            return  # a stale result of another attempt; never harvest it as this one
    else:  # the worker process died while running the job
        result = {
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
    campaign = session.get(Campaign, job.campaign_id)
    job_file = run_dir / JOB_FILE
    inputs = read_json(job_file)["inputs"] if job_file.is_file() else job.inputs
    artifacts = _ingest_artifacts(store, session, result.get("output"), run_dir)
    parents = [
        r
        for (r,) in session.execute(
            select(Job.record_id)
            .join(JobEdge, JobEdge.parent_id == Job.id)
            .where(JobEdge.child_id == job_id, Job.record_id.is_not(None))
        )
    ]
    previous = session.execute(
        select(Attempt.record_id)
        .where(Attempt.job_id == job_id, Attempt.number < attempt, Attempt.record_id.is_not(None))
        .order_by(Attempt.number.desc())
        .limit(1)
    ).scalar()
    record = build_record(
        record_id=str(uuid.uuid4()),
        job=job,
        campaign=campaign,
        result=result,
        inputs=inputs,
        artifacts=artifacts,
        parents=parents,
        retry_of=previous,
        corrections=list(job.corrections or []),
        batch_id=batch.id,
        scheduler_job_id=batch.scheduler_id,
        run_dir=str(run_dir),
    )
    document = record.model_dump(mode="json")
    system = record.system
    session.add(
        Record(
            record_id=record.record_id,
            schema_version=record.schema_version,
            job_id=job_id,
            attempt=attempt,
            campaign_id=job.campaign_id,
            workflow_id=job.workflow_id,
            input_hash=record.input_hash,
            status=record.run.status,
            code=record.method.code,
            calculation=record.method.calculation,
            chemical_formula_reduced=system.chemical_formula_reduced if system else None,
            elements=f",{','.join(system.elements)}," if system else None,
            nsites=system.nsites if system else None,
            energy=record.results.energy,
            energy_per_atom=record.results.energy_per_atom,
            structure_hash=system.structure_hash if system else None,
            owner=campaign.owner,
            project=campaign.project,
            access=campaign.access,
            license=campaign.license,
            output=result.get("output"),
            document=document,
        )
    )
    session.flush()
    for reference in artifacts:
        session.add(
            RecordArtifact(
                record_id=record.record_id,
                role=reference.role,
                name=reference.name,
                sha256=reference.sha256,
            )
        )
    for parent in set(parents):
        session.add(ProvenanceEdge(parent_id=parent, child_id=record.record_id, relation="input"))
    if previous:
        session.add(
            ProvenanceEdge(parent_id=previous, child_id=record.record_id, relation="retry_of")
        )
    started, finished = record.run.started_at, record.run.finished_at
    session.execute(
        Attempt.__table__.update()
        .where(Attempt.job_id == job_id, Attempt.number == attempt)
        .values(
            state=AttemptState.COMPLETED
            if result["status"] == "completed"
            else AttemptState.FAILED,
            record_id=record.record_id,
            host=record.run.host,
            started_at=started,
            finished_at=finished,
            input_hash=record.input_hash,
            error=result.get("error"),
            reason=(result.get("error") or {}).get("last_line", ""),
        )
    )
    if result["status"] == "completed":
        response = result.get("response") or None
        if response and not (
            response.get("addition")
            or response.get("detour")
            or response.get("replace")
            or response.get("stop_children")
        ):
            response = None
        move(
            session,
            [job_id],
            JobState.RUNNING,
            JobState.COMPLETED,
            record_id=record.record_id,
            input_hash=record.input_hash,
            pending_response=response,
            reason="",
        )
        report.completed += 1
    else:
        error = result.get("error") or {}
        science = error.get("kind", "science") != "infrastructure"
        move(
            session,
            [job_id],
            JobState.RUNNING,
            JobState.ERRORED,
            record_id=None,
            failures=job.failures + int(science and not error.get("correction")),
            reason=error.get("last_line", "failed"),
        )
        report.errored += 1
