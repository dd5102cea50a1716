"""Graph queries over job edges: descendants, and inserting new jobs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from matdx.store.models import Job, JobEdge, JobState
from matdx.workflows.job import Job as JobSpec

__all__ = ["children_of", "descendants_of", "insert_jobs"]


def children_of(session: Session, job_ids: Iterable[str]) -> set[str]:
    ids = list(job_ids)
    found: set[str] = set()
    for start in range(0, len(ids), 500):
        found.update(
            session.scalars(
                select(JobEdge.child_id).where(JobEdge.parent_id.in_(ids[start : start + 500]))
            )
        )
    return found


def descendants_of(session: Session, job_ids: Iterable[str]) -> set[str]:
    """Every job below ``job_ids`` (not including them)."""
    found: set[str] = set()
    frontier = set(job_ids)
    while frontier:
        frontier = children_of(session, frontier) - found
        found |= frontier
    return found


def insert_jobs(
    session: Session,
    jobs: Sequence[JobSpec],
    *,
    campaign_id: str,
    workflow_id: str | Mapping[str, str],
    force: bool = False,
) -> None:
    """Insert jobs as WAITING, with edges from the jobs their inputs reference.

    Parameters
    ----------
    workflow_id
        The workflow of all jobs, or of each job by job id.

    The caller checks that every referenced job exists (in ``jobs`` or in the store).
    """
    position = session.scalar(select(func.coalesce(func.max(Job.position), 0))) or 0
    rows = []
    edges = []
    for offset, spec in enumerate(jobs, start=1):
        rows.append(
            {
                "id": spec.id,
                "campaign_id": campaign_id,
                "workflow_id": workflow_id
                if isinstance(workflow_id, str)
                else workflow_id[spec.id],
                "position": position + offset,
                "name": spec.name,
                "function": spec.function,
                "inputs": spec.inputs,
                "state": JobState.WAITING.value,
                "retries": spec.retries,
                "resources": spec.resources,
                "force": force,
                "corrections": [],
            }
        )
        edges.extend({"parent_id": p, "child_id": spec.id} for p in spec.parents)
    if rows:
        session.execute(insert(Job), rows)
    if edges:
        session.execute(insert(JobEdge), edges)
