"""User actions on jobs: cancel and rerun."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sqlalchemy import select

from matdx.store.models import Batch, BatchState, Job, JobState
from matdx.store.store import Store
from matdx.workflows.executors.base import Executor
from matdx.workflows.graph import descendants_of
from matdx.workflows.states import move

__all__ = ["cancel", "rerun"]

CANCELLABLE = [JobState.WAITING, JobState.READY, JobState.RUNNING, JobState.ERRORED]
RERUNNABLE = [JobState.FAILED, JobState.CANCELLED, JobState.COMPLETED]


def cancel(
    store: Store, job_ids: Iterable[str], executors: Mapping[str, Executor], wait_s: float = 60.0
) -> int:
    """Cancel jobs and everything below them; stop batches left with nothing to do.

    Returns the number of jobs cancelled.
    """
    with store.tick_lock(wait_s=wait_s):
        with store.transaction() as session:
            targets = set(job_ids)
            below = descendants_of(session, targets)
            batches = set(
                session.scalars(
                    select(Job.batch_id).where(
                        Job.id.in_(targets | below), Job.state == JobState.RUNNING
                    )
                )
            )
            cancelled = move(
                session,
                targets | below,
                CANCELLABLE,
                JobState.CANCELLED,
                reason="cancelled by the user",
            )
            idle = [
                b
                for b in session.scalars(
                    select(Batch).where(
                        Batch.id.in_(batches - {None}), Batch.state == BatchState.ACTIVE
                    )
                )
                if not session.scalar(
                    select(Job.id).where(Job.batch_id == b.id, Job.state == JobState.RUNNING)
                )
            ]
        for batch in idle:
            executors[batch.executor].cancel(batch)
    return cancelled


def rerun(store: Store, job_ids: Iterable[str], wait_s: float = 60.0) -> int:
    """Put FAILED, CANCELLED or COMPLETED jobs back in line with a fresh retry budget.

    A completed job is rerun even when an identical result exists (``force``); cancelled jobs
    below the rerun ones are put back too. Returns the number of jobs put back.
    """
    with store.tick_lock(wait_s=wait_s), store.transaction() as session:
        targets = list(
            session.scalars(select(Job).where(Job.id.in_(list(job_ids)), Job.state.in_(RERUNNABLE)))
        )
        count = 0
        for job in targets:
            count += move(
                session,
                [job.id],
                job.state,
                JobState.WAITING,
                failures=0,
                requeues=0,
                corrections=[],
                resolved_inputs=None,
                input_hash=None,
                force=job.force or job.state == JobState.COMPLETED,
                record_id=None,
                reused_from=None,
                output_ref=None,
                reason="rerun requested",
            )
        below = descendants_of(session, [job.id for job in targets])
        count += move(
            session, below, JobState.CANCELLED, JobState.WAITING, reason="rerun requested above"
        )
    return count
