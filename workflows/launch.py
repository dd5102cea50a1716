"""Launch: pack READY jobs (and the WAITING jobs below them) into a batch and start it.

A batch takes the READY jobs in submission order plus every WAITING job all of whose parents
are in the batch or completed, so a whole chain (relax → static → fit) runs in one farm without
waiting for ticks in between. Launching is done in three steps, each safe to interrupt:

1. one transaction claims the jobs (RUNNING, a new attempt, run dirs named) and creates the
   batch as LAUNCHING;
2. run directories (``job.json``, input artifacts) and the manifest are written;
3. the executor starts the farm, and a transaction marks the batch ACTIVE.

A tick killed between 1 and 3 leaves a LAUNCHING batch, which the next harvest either adopts
(its farm started) or claims as abandoned and requeues (see :mod:`matdx.workflows.harvest`).
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from matdx.hpc.farm import Manifest, Task
from matdx.store.models import (
    Attempt,
    AttemptState,
    Batch,
    BatchState,
    Campaign,
    Job,
    JobEdge,
    JobState,
    utcnow,
)
from matdx.store.store import Store
from matdx.workflows.executors.base import Executor
from matdx.workflows.files import iter_artifacts
from matdx.workflows.outputs import OutputNotReady, job_outputs
from matdx.workflows.records import matdx_version
from matdx.workflows.reference import resolve_references
from matdx.workflows.rundir import JOB_FILE

__all__ = ["LaunchReport", "launch", "plan_batch"]

RUNNER = "matdx.workflows.run:run_task"
MAX_TASKS_PER_BATCH = 20_000


@dataclass
class LaunchReport:
    batches: list[str] = field(default_factory=list)
    launched: int = 0


def plan_batch(session: Session, campaign_ids: list[str], limit: int) -> list[Job]:
    """READY jobs of the campaigns, then WAITING jobs whose parents are all in the batch or
    completed, in an order where parents come first."""
    ready = list(
        session.scalars(
            select(Job)
            .where(Job.campaign_id.in_(campaign_ids), Job.state == JobState.READY)
            .order_by(Job.position)
            .limit(limit)
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
    """Start one batch per executor that has free capacity and READY jobs."""
    report = LaunchReport()
    with store.transaction() as session:
        campaigns = session.execute(
            select(Campaign.id, Campaign.executor).where(
                Campaign.id.in_(select(Job.campaign_id).where(Job.state == JobState.READY))
            )
        ).all()
    by_executor: dict[str, list[str]] = {}
    for campaign_id, spec in campaigns:
        by_executor.setdefault(spec.get("type", "local"), []).append(campaign_id)
    for name, campaign_ids in by_executor.items():
        executor = executors[name]
        batch_id = _claim(store, executor, campaign_ids, busy)
        if batch_id is None:
            continue
        launched = _start(store, executor, batch_id)
        report.batches.append(batch_id)
        report.launched += launched
    return report


def _claim(
    store: Store, executor: Executor, campaign_ids: list[str], busy: Mapping[str, int]
) -> str | None:
    """Step 1: claim jobs for a new batch in one transaction."""
    with store.transaction() as session:
        active = list(
            session.scalars(
                select(Batch).where(
                    Batch.executor == executor.name,
                    Batch.state.in_([BatchState.LAUNCHING, BatchState.ACTIVE]),
                )
            )
        )
        free = executor.capacity(active, busy)
        if free < 1:
            return None
        jobs = plan_batch(session, campaign_ids, MAX_TASKS_PER_BATCH)
        if not jobs:
            return None
        batch_id = str(uuid.uuid4())
        directory = store.home / "batches" / batch_id
        session.add(
            Batch(
                id=batch_id,
                executor=executor.name,
                state=BatchState.LAUNCHING,
                directory=str(directory),
                workers=min(free, len(jobs)),
                n_tasks=len(jobs),
            )
        )
        session.flush()
        # The jobs were read in this transaction, which holds the write lock, so they cannot
        # have changed: one bulk update by primary key claims them all.
        claimed, attempts = [], []
        now = utcnow()
        for job in jobs:
            attempt = job.attempt + 1
            run_dir = str(_run_dir(store.home, job, attempt))
            claimed.append(
                {
                    "id": job.id,
                    "state": JobState.RUNNING,
                    "attempt": attempt,
                    "batch_id": batch_id,
                    "run_dir": run_dir,
                    "reason": "",
                    "updated_at": now,
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
        session.execute(update(Job), claimed)
        session.execute(insert(Attempt), attempts)
    return batch_id


def _start(store: Store, executor: Executor, batch_id: str) -> int:
    """Steps 2 and 3: write run directories and the manifest, start the farm."""
    with store.transaction() as session:
        batch = session.get(Batch, batch_id)
        jobs = list(
            session.scalars(select(Job).where(Job.batch_id == batch_id).order_by(Job.position))
        )
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
        for job in jobs:
            run_dir = run_dirs[job.id]
            run_dir.mkdir(exist_ok=True)
            in_batch = {p: run_dirs[p] for p in parents[job.id] if p in run_dirs}
            outside = {p for p in parents[job.id] if p not in run_dirs}
            spec = _job_spec(store, session, job, job.attempt, run_dir, in_batch, outside)
            # Written before the farm starts, so nothing reads it half-written; a tick killed
            # here leaves a LAUNCHING batch that is abandoned whole.
            (run_dir / JOB_FILE).write_text(json.dumps(spec, separators=(",", ":")))
            tasks.append(
                Task(
                    id=job.id,
                    dir=str(run_dir),
                    after=tuple(in_batch),
                    cores=int((job.resources or {}).get("cores", 1)),
                    estimate_s=(job.resources or {}).get("estimate_s"),
                )
            )
        directory = Path(batch.directory)
        directory.mkdir(parents=True, exist_ok=True)
        manifest = directory / "manifest.json"
        Manifest(batch_id=batch_id, runner=RUNNER, tasks=tasks, workers=batch.workers).dump(
            manifest
        )
    started = executor.start(batch, str(manifest))
    with store.transaction() as session:
        batch = session.get(Batch, batch_id)
        if batch.state == BatchState.LAUNCHING:
            batch.state = BatchState.ACTIVE
            for key, value in started.items():
                setattr(batch, key, value)
    return len(tasks)
