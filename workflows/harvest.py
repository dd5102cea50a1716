"""Poll and harvest: turn what batches left in run directories into records and job states.

For every active batch the farm's event log says which tasks ended; each ended task's
``result.json`` becomes one record (completed or failed attempt), its output files become
artifacts, and the job moves to COMPLETED or ERRORED, all in one transaction per group of
results. A run directory is untrusted input (``matdx.workflows.rundir``): whatever is wrong
with one (a torn ``result.json``, an output that is a FIFO or a link to ``/etc``, a file over
the campaign's size limit) is that job's infrastructure failure, and the others are harvested.
Files are read, hashed and copied into the artifact store before the write transaction opens,
so the store is locked only while rows are written. An error of the store itself (disk full,
permissions, lost database connection) is nobody's failure: the result stays in its run
directory, no retry is spent, and the next tick records it. A batch that is over (its farm
ended, or died) has its remaining tasks requeued without spending a retry. A batch job that
died before its farm started because its environment is broken (its output names the cause,
e.g. ``No module named 'mpi4py'``) is requeued once; when the next batch job of the same
executor dies of the same cause, the executor's unfinished jobs are FAILED with one message
naming the cause and the fix, spending no retry, instead of being submitted again and again.
Running the same
harvest twice is harmless: a job is harvested only while it is RUNNING with the attempt the
result names, and the store allows one record per job attempt.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from matdx.hpc.errors import HPCError
from matdx.hpc.farm import (
    ABANDONED,
    EVENTS_FILE,
    TASK_LOG,
    batch_claimant,
    claim_batch,
)
from matdx.hpc.startup import FIX_HINT
from matdx.safety.text import first_unsafe
from matdx.store.artifacts import ObjectTooLarge, StoreWriteError
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
from matdx.workflows.crash import crash_reason
from matdx.workflows.executors.base import BatchStatus, Executor
from matdx.workflows.executors.spec import executor_key
from matdx.workflows.files import iter_artifacts
from matdx.workflows.records import build_record
from matdx.workflows.rundir import (
    DEFAULT_MAX_OUTPUT_BYTES,
    JOB_FILE,
    RESULT_FILE,
    UntrustedRunDir,
    check_artifact_name,
    open_in_run_dir,
    read_limited,
    read_result,
    relative_to_run_dir,
)
from matdx.workflows.states import move, move_each

log = logging.getLogger(__name__)

__all__ = ["HarvestReport", "batch_progress", "harvest"]

CHUNK = 500  # results per transaction
# A launch interrupted before its farm started is given up after this long.
LAUNCH_GRACE = timedelta(seconds=5)
FARM_LOG = "farm.log"  # the output of a farm started by the local or Dask executor
# Attempts lost with their batch (killed, walltime) do not spend retries, up to this many.
MAX_LOST = 10


@dataclass
class HarvestReport:
    completed: int = 0
    errored: int = 0
    requeued: int = 0
    batches_ended: int = 0
    # Results left in their run directories because the store could not take them this tick
    # (disk full, permissions, database connection lost); the next tick records them.
    deferred: int = 0
    refused: dict[str, str] = field(default_factory=dict)  # job id -> why its run dir was refused
    busy: dict[str, int] = field(default_factory=dict)  # batch id -> slots still occupied
    # executor -> why its jobs were stopped (the same startup failure ended two batch jobs)
    halted: dict[str, str] = field(default_factory=dict)


@dataclass
class _Progress:
    """What this process has read of one batch's event log so far."""

    offset: int = 0  # bytes read, up to the end of the last whole line
    ended: dict[str, str] = field(default_factory=dict)
    finished: str | None = None
    settled: set[str] = field(default_factory=set)  # ended tasks found no longer RUNNING


# Event logs are append-only: a tick run again in the same process (``matdx run``, the
# benchmark) reads only what was appended since, instead of the whole log every time.
_PROGRESS: dict[tuple[str, str], _Progress] = {}


def _progress(batch: Batch) -> _Progress:
    key = (batch.id, str(batch.directory))
    progress = _PROGRESS.setdefault(key, _Progress())
    try:
        with open(Path(batch.directory) / EVENTS_FILE, "rb") as handle:
            if os.fstat(handle.fileno()).st_size < progress.offset:  # not the log read before
                progress = _PROGRESS[key] = _Progress()
            handle.seek(progress.offset)
            data = handle.read()
    except FileNotFoundError:
        return progress
    whole = data.rfind(b"\n") + 1  # a partial last line is read again next time
    progress.offset += whole
    for line in data[:whole].splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "end":
            progress.ended[event["task"]] = event["status"]
        elif event.get("event") == "farm-end":
            progress.finished = event.get("reason", "finished")
    return progress


def batch_progress(batch: Batch) -> tuple[dict[str, str], str | None]:
    """Tasks that ended (id -> farm status), and why the farm finished (None while it runs)."""
    progress = _progress(batch)
    return dict(progress.ended), progress.finished


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
            row = session.get(Batch, batch.id)
            row.reason = row.reason or "launch interrupted; abandoned"
        try:
            executor.abandon(batch)
        except HPCError as error:  # its farm can never run a task: the job only idles
            log.warning("%s: could not look for a batch job of abandoned batch %s: %s",
                        executor.name, batch.id[:8], error)
        return
    try:
        found = executor.adopt(batch)
    except HPCError as error:  # the scheduler did not answer: decide at the next tick
        log.warning("%s: batch %s not adopted yet: %s", executor.name, batch.id[:8], error)
        return
    with store.transaction() as session:
        row = session.get(Batch, batch.id)
        row.state = BatchState.ACTIVE
        batch.state = BatchState.ACTIVE
        for key, value in found.items():
            setattr(row, key, value)
            setattr(batch, key, value)


def _harvest_batch(store: Store, batch: Batch, status: BatchStatus, report: HarvestReport) -> None:
    progress = _progress(batch)
    ended, finished = progress.ended, progress.finished
    # A farm stopped by a signal (walltime, scancel) is over, but the batch is ended only once
    # the executor says why, so that the requeued attempts and the report name the cause.
    stopped = finished is not None and finished.startswith("signal") and status.alive
    over = (finished is not None and not stopped) or not status.alive
    if batch.state == BatchState.LAUNCHING and batch_claimant(batch.directory) != ABANDONED:
        return  # still starting
    query = (
        select(Job.id, Job.attempt, Job.run_dir, Campaign.executor)
        .join(Campaign, Campaign.id == Job.campaign_id)
        .where(Job.batch_id == batch.id, Job.state == JobState.RUNNING)
    )
    # While the farm runs, only tasks that ended and were not found harvested already are
    # looked at, so a tick costs what it harvests, not what the batch holds.
    candidates = None if over else [t for t in ended if t not in progress.settled]
    with store.transaction() as session:
        if candidates is None:
            running = session.execute(query).all()
        else:
            running = []
            for start in range(0, len(candidates), CHUNK):
                chunk = candidates[start : start + CHUNK]
                running += session.execute(query.where(Job.id.in_(chunk))).all()
            progress.settled.update(set(candidates) - {row[0] for row in running})
    report.busy[batch.id] = min(batch.workers, batch.n_tasks - len(ended))
    todo = []
    lost = []
    # A worker that "crashed" while its allocation was being taken away (walltime, scancel,
    # node failure) was killed with it: the task is requeued, not failed.
    killed = over and status.infrastructure_failure
    for job_id, attempt, run_dir, executor in running:
        result_file = Path(run_dir) / RESULT_FILE
        if job_id in ended or over:
            crashed = ended.get(job_id, "").startswith("crashed")
            if os.path.lexists(result_file) or (crashed and not killed):
                todo.append((job_id, attempt, run_dir, _max_output_bytes(executor)))
            elif over:
                lost.append(job_id)
    # Parents first: a farm logs a task's end before its dependents start, so the order of
    # the end events is a parents-first order (results found without one come last).
    position = {task_id: i for i, task_id in enumerate(ended)}
    todo.sort(key=lambda item: position.get(item[0], len(position)))
    deferred = 0
    waiting: list[_Prepared] = []  # held back until their parents are recorded
    for start in range(0, len(todo), CHUNK):
        prepared: list[_Prepared] = []
        for job_id, attempt, run_dir, max_bytes in todo[start : start + CHUNK]:
            try:
                found = _prepare(store, job_id, attempt, Path(run_dir), ended.get(job_id),
                                 max_bytes, Path(batch.directory))
            except StoreWriteError as error:
                log.warning("job %s: result kept in %s for the next tick: %s",
                            job_id, run_dir, error)
                deferred += 1
                continue
            if found is not None:
                prepared.append(found)
                if found.refused:
                    report.refused[job_id] = found.refused
        if not prepared:
            continue
        recorded = _record_chunk(store, batch, prepared)
        if recorded is None:
            deferred += len(prepared)
            for item in prepared:
                report.refused.pop(item.job_id, None)
            continue
        done, failed, held = recorded
        report.completed += done
        report.errored += failed
        waiting += [item for item in prepared if item.job_id in held]
    while waiting:  # parents recorded after their children in the order above
        recorded = _record_chunk(store, batch, waiting)
        if recorded is None:
            deferred += len(waiting)
            waiting = []
            break
        done, failed, held = recorded
        report.completed += done
        report.errored += failed
        if not done + failed:
            break
        waiting = [item for item in waiting if item.job_id in held]
    orphans = [item.job_id for item in waiting]
    report.deferred += deferred
    if deferred:
        over = False  # the batch stays active until every result it left is recorded
    halt = None
    if status.startup_failure is not None and _repeated_startup_failure(
        store, batch, status.startup_failure
    ):
        halt = _halt_message(batch.executor, status.startup_failure)
        with store.transaction() as session:
            stopped_jobs = _halt(session, batch, lost, halt)
        log.error("%s (%d job(s) FAILED)", halt, stopped_jobs)
        report.halted[batch.executor] = halt
        lost = []
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
    if orphans and over:
        # A result whose parent was never recorded (the parent's result lost to a crash of
        # the machine, or refused by harvest) is not recorded either: the job runs again
        # once its parent has.
        with store.transaction() as session:
            _requeue(session, orphans, f"batch {batch.id[:8]} ended: a job it depends on has "
                     "no recorded result, so its result is not recorded")
        report.requeued += len(orphans)
    if over:
        with store.transaction() as session:
            row = session.get(Batch, batch.id)
            row.state = BatchState.ENDED
            row.ended_at = utcnow()
            row.reason = row.reason or (
                status.reason if status.infrastructure_failure else finished or status.reason
            )
            if status.startup_failure is not None:
                row.info = {**(row.info or {}), "startup_failure": status.startup_failure}
        report.batches_ended += 1
        report.busy.pop(batch.id, None)
        _PROGRESS.pop((batch.id, str(batch.directory)), None)


def _repeated_startup_failure(store: Store, batch: Batch, cause: str) -> bool:
    """True when the batch job of the same executor that ended last died of ``cause`` too."""
    with store.transaction() as session:
        previous = session.scalars(
            select(Batch)
            .where(Batch.executor == batch.executor, Batch.state == BatchState.ENDED,
                   Batch.id != batch.id)
            .order_by(Batch.ended_at.desc())
            .limit(1)
        ).first()
    return previous is not None and (previous.info or {}).get("startup_failure") == cause


def _halt_message(executor: str, cause: str) -> str:
    site = executor.split(":", 1)[-1]
    return (
        f"{executor}: 2 batch jobs in a row died before their farm started with `{cause}`; "
        f"their jobs are FAILED without spending a retry and nothing more is submitted. Fix: "
        + FIX_HINT.format(site=site)
    )


def _halt(session: Session, batch: Batch, lost: list[str], message: str) -> int:
    """FAIL the jobs lost with ``batch`` and every READY or WAITING job of the campaigns on
    its executor, without spending a retry; returns how many."""
    session.execute(
        Attempt.__table__.update()
        .where(Attempt.job_id.in_(select(Job.id).where(Job.batch_id == batch.id)),
               Attempt.state == AttemptState.RUNNING)
        .values(state=AttemptState.LOST, reason=message, finished_at=utcnow())
    )
    failed = move(session, lost, JobState.RUNNING, JobState.FAILED, batch_id=None,
                  reason=message)
    campaigns = [
        campaign_id
        for campaign_id, spec in session.execute(
            select(Campaign.id, Campaign.executor).where(
                Campaign.id.in_(
                    select(Job.campaign_id).where(Job.state.in_([JobState.READY,
                                                                 JobState.WAITING]))
                )
            )
        )
        if executor_key(spec) == batch.executor
    ]
    if campaigns:
        waiting = session.scalars(
            select(Job.id).where(Job.campaign_id.in_(campaigns),
                                 Job.state.in_([JobState.READY, JobState.WAITING]))
        ).all()
        failed += move(session, waiting, [JobState.READY, JobState.WAITING], JobState.FAILED,
                       reason=message)
    return failed


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


def _max_output_bytes(executor: Mapping[str, Any] | None) -> int:
    """The campaign's limit on one output file, bytes (``executor.max_output_mb``)."""
    limit = (executor or {}).get("max_output_mb")
    return int(limit) << 20 if limit else DEFAULT_MAX_OUTPUT_BYTES


@dataclass
class _Prepared:
    """One attempt's result, read from its run directory, its files already in the store."""

    job_id: str
    attempt: int
    run_dir: Path
    result: dict[str, Any]
    references: list[ArtifactReference]
    inputs: Any  # from job.json; None: use the job's own
    refused: str = ""  # why the run directory was refused ("" if it was not)


def _ingest_artifacts(
    store: Store, output: Any, run_dir: Path, max_bytes: int
) -> list[ArtifactReference]:
    """Copy the files an output names into the artifact store; strip their local paths.

    Raises
    ------
    UntrustedRunDir
        A file or name the run directory may not hand over (see ``matdx.workflows.rundir``).
    StoreWriteError
        The artifact store could not be written.
    """
    references: list[ArtifactReference] = []
    names: set[str] = set()
    for payload in iter_artifacts(output):
        if not isinstance(payload, dict):
            raise UntrustedRunDir(f"an artifact entry is {type(payload).__name__}, not an object")
        path = payload.pop("path", None)
        if path is None:
            continue
        name = check_artifact_name(payload.get("name"))
        media_type = payload.get("media_type")
        if not isinstance(media_type, str) or len(media_type) > 255 or first_unsafe(media_type):
            raise UntrustedRunDir(f"artifact {name!r}: media_type {media_type!r} is not valid")
        relative = relative_to_run_dir(run_dir, path)
        try:
            with open_in_run_dir(run_dir, relative, max_bytes) as handle:
                sha256, size = store.artifacts.put_file(handle, max_bytes=max_bytes)
        except ObjectTooLarge as error:
            raise UntrustedRunDir(
                f"{relative}: grew over the campaign's limit of {max_bytes} bytes "
                "(executor.max_output_mb) while it was copied"
            ) from error
        if sha256 != payload.get("sha256"):
            raise UntrustedRunDir(f"{relative}: changed after the job returned it (sha256 differs)")
        unique, copy = name, 2
        while unique in names:  # two files returned under one name: keep both
            unique, copy = f"{name}.{copy}", copy + 1
        names.add(unique)
        payload["name"] = unique
        payload["size"] = size
        references.append(
            ArtifactReference(
                role="output", name=unique, media_type=media_type, size=size, sha256=sha256
            )
        )
    return references


def _failure(job_id: str, attempt: int, kind: str, error_type: str, message: str,
             last_line: str) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "attempt": attempt,
        "status": "failed",
        "output": None,
        "response": None,
        "input_hash": None,
        "error": {"type": error_type, "message": message, "last_line": last_line,
                  "kind": kind, "correction": None},
    }


def _prepare(
    store: Store, job_id: str, attempt: int, run_dir: Path, farm_status: str | None,
    max_bytes: int, batch_dir: Path | None = None,
) -> _Prepared | None:
    """Read one attempt's run directory and put its files in the artifact store, outside any
    transaction. None for a result of another attempt (never harvested as this one).

    A run directory that cannot be trusted gives a failed result of kind "infrastructure"
    (spends no retry; ``matdx.workflows.recover`` bounds the repeats), with the reason.

    Raises
    ------
    StoreWriteError
        The artifact store could not be written: the result stays for the next tick.
    """
    if not os.path.lexists(run_dir / RESULT_FILE):
        # The process died, or could not write its result: say why in words, with the error
        # it printed (task log under MPI, else the farm's log).
        logs = [run_dir / TASK_LOG] + ([batch_dir / FARM_LOG] if batch_dir else [])
        reason = crash_reason(farm_status or "", logs)
        result = _failure(job_id, attempt, "program", "WorkerDied", reason, reason)
        return _Prepared(job_id, attempt, run_dir, result, [], None)
    try:
        parsed = read_result(run_dir, max_bytes)
        if parsed.job_id != job_id or parsed.attempt != attempt:
            return None
        result = parsed.model_dump()
        references = _ingest_artifacts(store, result.get("output"), run_dir, max_bytes)
    except (UntrustedRunDir, OSError) as error:
        if isinstance(error, StoreWriteError):
            raise
        reason = str(error) if isinstance(error, UntrustedRunDir) else f"cannot read: {error}"
        result = _failure(job_id, attempt, "infrastructure", "UntrustedRunDir", reason,
                          f"harvest refused the run directory: {reason}")
        return _Prepared(job_id, attempt, run_dir, result, [], None, refused=reason)
    inputs = None
    try:
        with open_in_run_dir(run_dir, JOB_FILE, max_bytes) as handle:
            inputs = json.loads(read_limited(handle, max_bytes) or b"null").get("inputs")
    except (UntrustedRunDir, OSError, ValueError, AttributeError):
        inputs = None  # the job's own inputs, as the store knows them, describe it
    return _Prepared(job_id, attempt, run_dir, result, references, inputs)


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


def _record_of(result: dict[str, Any], *, job: Job, campaign: Campaign, inputs: Any,
               run_dir: Path, record_id: str, parents: list[str], retry_of: str | None,
               batch: Batch, references: list[ArtifactReference]) -> Any:
    """The validated record of one attempt."""
    return build_record(
        record_id=record_id, job=job, campaign=campaign, result=result, inputs=inputs,
        artifacts=references, parents=parents, retry_of=retry_of,
        corrections=list(job.corrections or []), batch_id=batch.id,
        scheduler_job_id=batch.scheduler_id, run_dir=str(run_dir),
    )


def _record_chunk(
    store: Store, batch: Batch, items: list[_Prepared]
) -> tuple[int, int, set[str]] | None:
    """Record ``items`` in one transaction (:func:`_harvest_chunk`); None when the store could
    not be written (disk full, lost connection): nobody's failure, the results stay in their
    run directories and the next tick records them."""
    try:
        with store.transaction() as session:
            return _harvest_chunk(store, session, batch, items)
    except (OperationalError, InterfaceError, StoreWriteError) as error:
        log.warning("%d result(s) of batch %s kept in their run directories for the next "
                    "tick: %s", len(items), batch.id[:8], error)
        return None


def _harvest_chunk(
    store: Store, session: Session, batch: Batch, items: list[_Prepared]
) -> tuple[int, int, set[str]]:
    """Record a group of prepared attempts with a fixed number of statements.

    Everything, records and job states alike, is written in the caller's single transaction;
    no file is read here. An attempt is recorded only if every job it depends on is recorded
    as completed (before, or earlier in ``items``, which come parents first): a dependent
    whose parent's result was lost or refused is held back, never recorded without its
    parent. Returns (completed, errored) counts and the ids of the jobs held back.
    """
    ids = [item.job_id for item in items]
    jobs = {
        job.id: job
        for job in session.scalars(
            select(Job).where(Job.id.in_(ids), Job.state == JobState.RUNNING)
        )
    }
    results: dict[str, dict[str, Any]] = {}
    prepared: dict[str, _Prepared] = {}
    for item in items:
        job = jobs.get(item.job_id)
        if job is None or job.attempt != item.attempt:
            continue
        results[item.job_id] = item.result
        prepared[item.job_id] = item
    if not results:
        return 0, 0, set()
    record_ids = {job_id: str(uuid.uuid4()) for job_id in results}
    campaigns = {
        c.id: c
        for c in session.scalars(
            select(Campaign).where(Campaign.id.in_({jobs[j].campaign_id for j in results}))
        )
    }
    # Each job's parents: their record ids if recorded as completed before, else None
    # (unless the parent is recorded completed earlier in this chunk, see below).
    parent_jobs: dict[str, dict[str, str | None]] = {job_id: {} for job_id in results}
    for child, parent, parent_record, parent_state in session.execute(
        select(JobEdge.child_id, JobEdge.parent_id, Job.record_id, Job.state)
        .join(Job, Job.id == JobEdge.parent_id)
        .where(JobEdge.child_id.in_(list(results)))
    ):
        recorded = parent_record if parent_state == JobState.COMPLETED else None
        parent_jobs[child][parent] = recorded
    parents: dict[str, set[str]] = {job_id: set() for job_id in results}
    held: set[str] = set()
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
    recorded_now: dict[str, str] = {}  # job -> record of its completed attempt in this chunk
    for job_id, result in list(results.items()):
        job, item = jobs[job_id], prepared[job_id]
        found = [known or recorded_now.get(parent) for parent, known in parent_jobs[job_id].items()]
        if None in found:
            held.add(job_id)
            continue
        parents[job_id].update(found)
        context = {
            "job": job, "campaign": campaigns[job.campaign_id],
            "inputs": item.inputs if item.inputs is not None else job.inputs,
            "run_dir": item.run_dir, "record_id": record_ids[job_id],
            "parents": sorted(parents[job_id]), "retry_of": previous.get(job_id),
            "batch": batch,
        }
        references = item.references
        try:
            record = _record_of(result, references=references, **context)
        except (ValueError, TypeError, KeyError) as error:
            # An output the record schema rejects fails this attempt; it must not stop the
            # tick.
            result = {**result, "status": "failed", "output": None, "response": None,
                      "error": {"type": type(error).__name__, "message": str(error),
                                "last_line": f"harvest: {type(error).__name__}: {error}",
                                "kind": "program", "correction": None}}
            results[job_id] = result
            references = []
            try:
                record = _record_of(result, references=references, **context)
            except (ValueError, TypeError, KeyError) as again:
                # Not even the failed attempt can be recorded (e.g. its campaign's governance
                # no longer validates): the job stays as it is, with its result on disk, and
                # the rest of the tick goes on.
                log.error("job %s: result kept in %s, not harvested: %s", job_id,
                          item.run_dir, again)
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
            recorded_now[job_id] = record.record_id
            completed.append(
                {
                    "id": job_id,
                    "record_id": record.record_id,
                    "input_hash": record.input_hash,
                    "pending_response": _graph_change(result),
                    "reason": "",
                }
            )
        else:
            spends_retry = (error or {}).get("kind", "program") != "infrastructure" and not (
                error or {}
            ).get("correction")
            errored.append(
                {
                    "id": job_id,
                    "record_id": None,
                    "failures": job.failures + int(spends_retry),
                    "reason": (error or {}).get("last_line", "failed"),
                }
            )

    known = set(session.scalars(select(Artifact.sha256).where(Artifact.sha256.in_(artifacts))))
    new_artifacts = [row for sha, row in artifacts.items() if sha not in known]
    if new_artifacts:
        session.execute(insert(Artifact), new_artifacts)
    if not records:
        return 0, 0, held
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
    move_each(session, completed, JobState.RUNNING, JobState.COMPLETED)
    move_each(session, errored, JobState.RUNNING, JobState.ERRORED)
    return len(completed), len(errored), held
