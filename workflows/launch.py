"""Launch: pack READY jobs (and the WAITING jobs below them) into batches and start them.

A batch takes the READY jobs in submission order plus every WAITING job all of whose parents
are in the batch or completed, so a whole chain (relax → static → fit) runs in one farm without
waiting for ticks in between. How the jobs are split into batches (a local executor: one
batch; a batch queue: as few batch jobs as walltime, cores and queue cap allow) is
:mod:`matdx.workflows.packing`'s. Launching is done in three steps, each safe to interrupt:

1. one transaction packs and claims the jobs (RUNNING, a new attempt, run dirs named) and
   creates the batches as LAUNCHING;
2. run directories (``job.json``, input artifacts) and the manifest are written;
3. the executor starts the farm (or submits its batch job), and a transaction marks the
   batch ACTIVE with the scheduler's job id.

After a batch of an executor died before its farm started (a broken batch environment, see
:mod:`matdx.workflows.harvest`), nothing more is submitted on that executor while another of
its batches is still queued: that one shows whether the failure repeats.

A tick killed between 1 and 3 leaves a LAUNCHING batch, which the next harvest either adopts
(its farm started) or claims as abandoned and requeues (see :mod:`matdx.workflows.harvest`).
"""

from __future__ import annotations

import copy
import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from matdx.hpc.errors import HPCError
from matdx.hpc.farm import ABANDONED, Manifest, Task, claim_batch
from matdx.store.lock import claim_rows
from matdx.store.models import (
    Attempt,
    AttemptState,
    Batch,
    BatchState,
    Campaign,
    Job,
    JobEdge,
    JobState,
)
from matdx.store.store import Store
from matdx.workflows.executors.base import MAX_TASKS_PER_BATCH, Allocation, Executor
from matdx.workflows.executors.spec import executor_key
from matdx.workflows.files import iter_artifacts
from matdx.workflows.outputs import OutputNotReady, job_outputs
from matdx.workflows.packing import PackTask, farm_order, pack
from matdx.workflows.records import matdx_version
from matdx.workflows.reference import resolve_references
from matdx.workflows.rundir import (
    JOB_FILE,
    RESULT_FILE,
    fsync_directory,
    fsync_many,
)
from matdx.workflows.states import move, move_each

__all__ = ["LaunchReport", "launch", "plan_batch"]

log = logging.getLogger("matdx.workflows")

RUNNER = "matdx.workflows.run:run_task"
HISTORY_ATTEMPTS = 50  # completed attempts of a function looked at for its run time
ESTIMATE_SAFETY = 1.25  # estimate = longest of those × this
# Files of a run directory the farm makes durable (batched) before it reports a task's end;
# the runner then writes them without fsyncs of its own (see matdx.hpc.farm, "Durability").
SYNCED_FILES = (JOB_FILE, RESULT_FILE)


@dataclass
class LaunchReport:
    batches: list[str] = field(default_factory=list)
    launched: int = 0
    rejected: int = 0  # READY jobs failed because they are wider than any batch


def plan_batch(session: Session, campaign_ids: list[str], limit: int) -> list[Job]:
    """READY jobs of the campaigns, then WAITING jobs whose parents are all in the batch or
    completed, in an order where parents come first."""
    # On PostgreSQL the READY rows are locked (FOR UPDATE SKIP LOCKED) until the claim commits,
    # so two launchers never take the same job; SQLite serialises writers (BEGIN IMMEDIATE).
    ready = list(
        session.scalars(
            claim_rows(
                select(Job)
                .where(Job.campaign_id.in_(campaign_ids), Job.state == JobState.READY)
                .order_by(Job.position)
                .limit(limit),
                session,
                of=Job,
            )
        )
    )
    if not ready:
        return []
    chosen = {job.id for job in ready}
    # Children are packed below parents that have not failed before; a retried job's
    # children wait for it to succeed rather than be packed and skipped again.
    packable = {job.id for job in ready if job.failures == 0}
    waiting = {
        job.id: job
        for job in session.scalars(
            select(Job)
            .where(Job.campaign_id.in_(campaign_ids), Job.state == JobState.WAITING)
            .order_by(Job.position)
        )
    }
    # For each waiting job: its parents, and whether each one's output is available now.
    parents: dict[str, dict[str, bool]] = {job_id: {} for job_id in waiting}
    parent = Job.__table__.alias("parent")
    for child_id, parent_id, state, pending, replaced in session.execute(
        select(
            JobEdge.child_id,
            JobEdge.parent_id,
            parent.c.state,
            parent.c.pending_response.is_not(None),
            parent.c.output_ref.is_not(None),
        )
        .join(parent, parent.c.id == JobEdge.parent_id)
        .where(
            JobEdge.child_id.in_(
                select(Job.id).where(
                    Job.campaign_id.in_(campaign_ids), Job.state == JobState.WAITING
                )
            )
        )
    ):
        if child_id not in parents:
            continue
        available = state == JobState.COMPLETED and not pending
        if available and replaced:
            try:
                job_outputs(session, [parent_id])
            except OutputNotReady:
                available = False
        parents[child_id][parent_id] = available
    batch = list(ready)
    added = True
    while added and len(batch) < limit:
        added = False
        for job_id, job in waiting.items():
            if job_id in chosen or len(batch) >= limit:
                continue
            if all(
                p in packable or (available and p not in chosen)
                for p, available in parents[job_id].items()
            ):
                chosen.add(job_id)
                packable.add(job_id)
                batch.append(job)
                added = True
    return batch


def _run_dir(home: Path, job: Job, attempt: int) -> Path:
    return home / "runs" / job.campaign_id / f"{job.id}.{attempt}"


def _job_spec(
    store: Store,
    session: Session,
    job: Job,
    attempt: int,
    run_dir: Path,
    in_batch: Mapping[str, Path],
    outside: set[str],
) -> dict[str, Any]:
    """The content of ``job.json``: inputs resolved as far as possible, input artifacts copied
    into the run directory, parents in the same batch left for the farm to resolve.

    Parameters
    ----------
    in_batch
        Run directory of each parent that runs in the same batch.
    outside
        Parents that completed before this batch.
    """
    if job.resolved_inputs is not None:
        inputs = job.resolved_inputs
    elif outside or in_batch:
        inputs = resolve_references(job.inputs, job_outputs(session, outside), partial=True)
    else:
        inputs = job.inputs
    if any(True for _ in iter_artifacts(inputs)):
        inputs = copy.deepcopy(inputs)
        for payload in iter_artifacts(inputs):
            if "path" not in payload:
                relative = Path("inputs") / f"{payload['sha256'][:12]}-{payload['name']}"
                store.artifacts.materialize(payload["sha256"], run_dir / relative)
                payload["path"] = str(relative)
    return {
        "job_id": job.id,
        "attempt": attempt,
        "name": job.name,
        "function": job.function,
        "campaign_id": job.campaign_id,
        "workflow_id": job.workflow_id,
        "inputs": inputs,
        "pending_parents": {p: str(d) for p, d in in_batch.items()},
        "input_hash": None if in_batch else job.input_hash,
        "corrections": job.corrections or [],
        "resources": job.resources or {},
        "matdx_version": matdx_version(),
    }


def launch(
    store: Store, executors: Mapping[str, Executor], busy: Mapping[str, int]
) -> LaunchReport:
    """Start batches for every executor that has room and READY jobs.

    Campaigns are grouped by executor (:func:`~matdx.workflows.executors.spec.executor_key`),
    then by their executor section: jobs of campaigns asking for the same allocation share
    batches. Each group is packed (:mod:`matdx.workflows.packing`) into as many batches as
    the executor allows now.
    """
    report = LaunchReport()
    with store.transaction() as session:
        campaigns = session.execute(
            select(Campaign.id, Campaign.executor)
            .where(Campaign.id.in_(select(Job.campaign_id).where(Job.state == JobState.READY)))
            .order_by(Campaign.created_at)
        ).all()
    groups: dict[str, dict[str, tuple[dict[str, Any], list[str]]]] = {}
    for campaign_id, spec in campaigns:
        by_spec = groups.setdefault(executor_key(spec), {})
        same = json.dumps(spec, sort_keys=True)
        by_spec.setdefault(same, (spec, []))[1].append(campaign_id)
    for name, by_spec in groups.items():
        executor = executors[name]
        if _startup_in_doubt(store, name):
            continue
        for spec, campaign_ids in by_spec.values():
            for batch_id in _claim_batches(store, executor, spec, campaign_ids, busy, report):
                report.launched += _start(store, executor, batch_id)
                report.batches.append(batch_id)
    return report


def _startup_in_doubt(store: Store, executor: str) -> bool:
    """True when the executor's last ended batch died before its farm started and another
    of its batches has not ended yet (wait for it before submitting more)."""
    with store.transaction() as session:
        last = session.scalars(
            select(Batch)
            .where(Batch.executor == executor, Batch.state == BatchState.ENDED)
            .order_by(Batch.ended_at.desc())
            .limit(1)
        ).first()
        if last is None or not (last.info or {}).get("startup_failure"):
            return False
        return session.scalar(
            select(Batch.id)
            .where(Batch.executor == executor,
                   Batch.state.in_([BatchState.LAUNCHING, BatchState.ACTIVE]))
            .limit(1)
        ) is not None


def _estimates(
    session: Session, jobs: list[Job], default_s: float | None, usable_s: float | None = None
) -> dict[str, float | None]:
    """Expected run time of each job, s: its ``resources.estimate_s``, else the longest of
    the last completed attempts of the same function times a safety factor, else
    ``default_s``.

    A history estimate falls back to the longest attempt itself when the safety factor would
    take it past ``usable_s`` (a batch's walltime minus margin) but that attempt fitted: the
    factor must not keep a job that has run within a batch from ever starting again.
    """
    found: dict[str, float | None] = {}
    functions: set[str] = set()
    for job in jobs:
        given = (job.resources or {}).get("estimate_s")
        if given is not None:
            found[job.id] = float(given)
        else:
            functions.add(job.function)
    history: dict[str, float] = {}
    for function in sorted(functions):
        rows = session.execute(
            select(Attempt.started_at, Attempt.finished_at)
            .join(Job, Job.id == Attempt.job_id)
            .where(
                Job.function == function,
                Attempt.state == AttemptState.COMPLETED,
                Attempt.started_at.is_not(None),
                Attempt.finished_at.is_not(None),
            )
            .order_by(Attempt.finished_at.desc())
            .limit(HISTORY_ATTEMPTS)
        ).all()
        durations = [(end - begin).total_seconds() for begin, end in rows]
        if durations:
            longest = max(durations)
            history[function] = ESTIMATE_SAFETY * longest
            if usable_s is not None and longest <= usable_s < history[function]:
                history[function] = longest
    for job in jobs:
        if job.id not in found:
            found[job.id] = history.get(job.function, default_s)
    return found


def _claim(
    store: Store, executor: Executor, campaign_ids: list[str], busy: Mapping[str, int]
) -> str | None:
    """Step 1 alone for campaigns sharing an executor section: the first batch claimed."""
    with store.transaction() as session:
        spec = session.scalar(select(Campaign.executor).where(Campaign.id == campaign_ids[0]))
    claimed = _claim_batches(store, executor, spec, campaign_ids, busy, LaunchReport())
    return claimed[0] if claimed else None


def _claim_batches(
    store: Store,
    executor: Executor,
    spec: Mapping[str, Any],
    campaign_ids: list[str],
    busy: Mapping[str, int],
    report: LaunchReport,
) -> list[str]:
    """Step 1: pack READY jobs and claim them for new batches, in one transaction."""
    with store.transaction() as session:
        active = list(
            session.scalars(
                select(Batch).where(
                    Batch.executor == executor.name,
                    Batch.state.in_([BatchState.LAUNCHING, BatchState.ACTIVE]),
                )
            )
        )
        allocation = executor.allocation(active, busy, spec)
        if allocation is None:
            return []
        limit = min(MAX_TASKS_PER_BATCH, allocation.max_tasks * allocation.batches)
        jobs = plan_batch(session, campaign_ids, limit)
        if not jobs:
            return []
        estimates = _estimates(
            session, jobs, allocation.default_estimate_s, allocation.usable_s
        )
        jobs = _reject_unfit(session, jobs, estimates, allocation, report)
        by_id = {job.id: job for job in jobs}
        parents: dict[str, list[str]] = {job.id: [] for job in jobs}
        # Children in the batch only: with a second IN list on parent_id, SQLite probes the
        # primary key for every (parent, child) pair, N² for a batch of N jobs.
        for child_id, parent_id in session.execute(
            select(JobEdge.child_id, JobEdge.parent_id).where(JobEdge.child_id.in_(list(by_id)))
        ):
            if parent_id in by_id:
                parents[child_id].append(parent_id)
        candidates = [
            PackTask(job.id, _cores(job), estimates[job.id], tuple(parents[job.id]))
            for job in jobs
        ]
        batch_ids = []
        for packed in pack(candidates, allocation):
            batch_id = str(uuid.uuid4())
            slots = packed.slots_needed
            info = executor.batch_info(spec, slots)
            info.update(
                walltime_s=allocation.walltime_s,
                margin_s=allocation.margin_s,
                order=[t.id for t in farm_order(packed.tasks)],
                estimates={t.id: t.estimate_s for t in packed.tasks if t.estimate_s is not None},
                planned_s=packed.makespan_s if packed.timed else None,
            )
            session.add(
                Batch(
                    id=batch_id,
                    executor=executor.name,
                    state=BatchState.LAUNCHING,
                    directory=str(store.home / "batches" / batch_id),
                    workers=slots,
                    n_tasks=len(packed.tasks),
                    info=info,
                )
            )
            session.flush()
            # The jobs were read in this transaction and cannot have changed since: on SQLite
            # it holds the write lock, on PostgreSQL the READY rows are locked by the claim
            # and their WAITING descendants belong to this tick (the tick lock). One bulk
            # update through the state machine claims them all.
            claimed, attempts = [], []
            for task in packed.tasks:
                job = by_id[task.id]
                attempt = job.attempt + 1
                run_dir = str(_run_dir(store.home, job, attempt))
                claimed.append(
                    {
                        "id": job.id,
                        "attempt": attempt,
                        "batch_id": batch_id,
                        "run_dir": run_dir,
                        "reason": "",
                    }
                )
                attempts.append(
                    {
                        "job_id": job.id,
                        "number": attempt,
                        "state": AttemptState.RUNNING,
                        "batch_id": batch_id,
                        "run_dir": run_dir,
                        "input_hash": job.input_hash,
                        "corrections": job.corrections or [],
                    }
                )
            # READY jobs, and WAITING descendants packed with their parents, start to run.
            move_each(session, claimed, [JobState.READY, JobState.WAITING], JobState.RUNNING)
            session.execute(insert(Attempt), attempts)
            batch_ids.append(batch_id)
    return batch_ids


def _cores(job: Job) -> int:
    return max(1, int((job.resources or {}).get("cores", 1)))


def _reject_unfit(
    session: Session,
    jobs: list[Job],
    estimates: Mapping[str, float | None],
    allocation: Allocation,
    report: LaunchReport,
) -> list[Job]:
    """Fail READY jobs that no batch could ever start: wider than a batch, or estimated to
    run longer than a batch's walltime minus its margin (a farm never starts those, so they
    would be requeued batch after batch); WAITING jobs packed below them are left out."""
    widest = allocation.widest or allocation.slots
    usable = allocation.usable_s
    reasons: dict[str, str] = {}
    for job in jobs:
        if job.state != JobState.READY:
            continue
        estimate = estimates.get(job.id)
        if _cores(job) > widest:
            reasons[job.id] = (
                f"needs {_cores(job)} cores; a batch of this executor has at most {widest}"
            )
        elif usable is not None and estimate is not None and estimate > usable:
            reasons[job.id] = (
                f"estimated to run {estimate:.0f} s; a batch of this executor has "
                f"{usable:.0f} s (walltime minus margin)"
            )
    wide = set(reasons)
    if not wide:
        return jobs
    for job_id, reason in reasons.items():
        move(session, [job_id], JobState.READY, JobState.FAILED, reason=reason)
    report.rejected += len(wide)
    below: set[str] = set(wide)
    kept = []
    for job in jobs:  # parents come first, so one pass finds everything below
        if job.id in below:
            continue
        if job.state == JobState.WAITING and session.scalar(
            select(JobEdge.parent_id)
            .where(JobEdge.child_id == job.id, JobEdge.parent_id.in_(below))
            .limit(1)
        ):
            below.add(job.id)
            continue
        kept.append(job)
    return kept


def _start(store: Store, executor: Executor, batch_id: str) -> int:
    """Steps 2 and 3: write run directories and the manifest, start the farm."""
    with store.transaction() as session:
        batch = session.get(Batch, batch_id)
        jobs = list(
            session.scalars(select(Job).where(Job.batch_id == batch_id).order_by(Job.position))
        )
        order = {job_id: i for i, job_id in enumerate((batch.info or {}).get("order", []))}
        jobs.sort(key=lambda job: order.get(job.id, len(order)))
        estimates = (batch.info or {}).get("estimates", {})
        run_dirs = {job.id: Path(job.run_dir) for job in jobs}
        for campaign_dir in {d.parent for d in run_dirs.values()}:
            campaign_dir.mkdir(parents=True, exist_ok=True)
        parents: dict[str, list[str]] = {job.id: [] for job in jobs}
        for child_id, parent_id in session.execute(
            select(JobEdge.child_id, JobEdge.parent_id).where(
                JobEdge.child_id.in_(select(Job.id).where(Job.batch_id == batch_id))
            )
        ):
            parents[child_id].append(parent_id)
        tasks = []
        specs: list[tuple[Path, dict[str, Any]]] = []
        for job in jobs:
            run_dir = run_dirs[job.id]
            run_dir.mkdir(exist_ok=True)
            in_batch = {p: run_dirs[p] for p in parents[job.id] if p in run_dirs}
            outside = {p for p in parents[job.id] if p not in run_dirs}
            specs.append(
                (run_dir, _job_spec(store, session, job, job.attempt, run_dir, in_batch, outside))
            )
            tasks.append(
                Task(
                    id=job.id,
                    dir=str(run_dir),
                    after=tuple(in_batch),
                    cores=_cores(job),
                    estimate_s=estimates.get(job.id),
                )
            )
        directory = Path(batch.directory)
        manifest_data = Manifest(
            batch_id=batch_id,
            runner=RUNNER,
            tasks=tasks,
            workers=batch.workers,
            walltime_s=(batch.info or {}).get("walltime_s"),
            margin_s=(batch.info or {}).get("margin_s") or 0.0,
            sync=list(SYNCED_FILES),
        )
    # Outside the transaction: every job.json is written, then all are made durable at once
    # (threaded fsyncs, then each directory), before the manifest names them. Nothing reads
    # them before the farm starts, so nothing sees one half-written; a tick killed here leaves
    # a LAUNCHING batch that is abandoned whole.
    for run_dir, spec in specs:
        # Written in place: no farm reads it before the manifest exists.
        with open(run_dir / JOB_FILE, "w") as handle:
            handle.write(json.dumps(spec, allow_nan=True, separators=(",", ":")))
    fsync_many([run_dir / JOB_FILE for run_dir, _ in specs])  # and each run directory
    for campaign_dir in {run_dir.parent for run_dir, _ in specs}:
        fsync_directory(campaign_dir)  # the new run directories' entries
    directory.mkdir(parents=True, exist_ok=True)
    manifest = directory / "manifest.json"
    manifest_data.dump(manifest)
    try:
        started = executor.start(batch, str(manifest))
    except HPCError as error:
        # Submission failed (sbatch refused it or timed out): the batch is given up, so that
        # its farm can never start; the next harvest cancels a job the scheduler may have
        # taken anyway (found by name) and requeues the jobs without spending a retry.
        log.warning("%s: batch %s not started: %s", executor.name, batch_id[:8], error)
        claim_batch(directory, ABANDONED)
        with store.transaction() as session:
            session.get(Batch, batch_id).reason = f"submission failed: {error}"
        return 0
    with store.transaction() as session:
        batch = session.get(Batch, batch_id)
        if batch.state == BatchState.LAUNCHING:
            batch.state = BatchState.ACTIVE
            for key, value in started.items():
                setattr(batch, key, value)
    return len(tasks)
