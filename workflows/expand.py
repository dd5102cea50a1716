"""Expand: apply the graph changes (``Response``) that completed jobs returned."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from matdx.store.access import Purpose, Requester, allowed
from matdx.store.models import Campaign, Job, JobEdge, JobState
from matdx.store.store import Store
from matdx.workflows.flow import Flow
from matdx.workflows.graph import children_of, descendants_of, insert_jobs
from matdx.workflows.reference import iter_reference_ids
from matdx.workflows.states import move

__all__ = ["ExpandReport", "expand"]


@dataclass
class ExpandReport:
    responses: int = 0
    added: int = 0
    cancelled: int = 0


class ResponseError(ValueError):
    """A response names jobs that do not exist or that its campaign's owner may not read."""


def _check_references(session: Session, flows: list[Flow], campaign: Campaign) -> None:
    """Every job the new jobs reference exists and is the campaign's own or readable by its
    owner (the same rule as at submit: ``store.access``, results purpose)."""
    new = {j.id for flow in flows for j in flow.jobs}
    referenced = {p for flow in flows for j in flow.jobs for p in j.parents}
    referenced |= {p for flow in flows for p in iter_reference_ids(flow.output)}
    outside = referenced - new
    found = (
        dict(session.execute(select(Job.id, Job.campaign_id).where(Job.id.in_(outside))).all())
        if outside
        else {}
    )
    if outside - found.keys():
        raise ResponseError(f"references to unknown jobs {sorted(outside - found.keys())}")
    owner = Requester(campaign.owner or None, frozenset({campaign.project}))
    others = set(found.values()) - {campaign.id}
    readable = allowed(session, owner, Purpose.RESULTS, others, table=Campaign)
    hidden = sorted(job_id for job_id, c in found.items() if c != campaign.id and c not in readable)
    if hidden:
        raise ResponseError(
            f"references to jobs of campaigns {campaign.owner or 'the owner'} may not read: "
            f"{hidden}; nothing of them was added"
        )
    clash = set(session.scalars(select(Job.id).where(Job.id.in_(new)))) if new else set()
    if clash:
        raise ResponseError(f"jobs {sorted(clash)} already exist")


def _apply(session: Session, job: Job, report: ExpandReport) -> None:
    response = job.pending_response
    flows = {
        key: Flow.from_dict(response[key])
        for key in ("addition", "detour", "replace")
        if response.get(key)
    }
    _check_references(session, list(flows.values()), session.get(Campaign, job.campaign_id))
    children = children_of(session, [job.id])
    for key, flow in flows.items():
        new_jobs = list(flow.jobs)
        insert_jobs(
            session,
            new_jobs,
            campaign_id=job.campaign_id,
            workflow_id=job.workflow_id,
            force=job.force,
        )
        report.added += len(new_jobs)
        if key == "detour":  # every child now also waits for every detour job
            holders = [j.id for j in new_jobs]
        elif key == "replace":  # children wait for the jobs the replacement's output names
            holders = sorted(set(iter_reference_ids(flow.output))) or [j.id for j in new_jobs]
            job.output_ref = flow.output
        else:
            continue
        edges = [{"parent_id": h, "child_id": c} for h in holders for c in children]
        if edges:
            session.execute(insert(JobEdge), edges)
    if response.get("stop_children"):
        below = descendants_of(session, [job.id])
        report.cancelled += move(
            session,
            below,
            [JobState.WAITING, JobState.READY],
            JobState.CANCELLED,
            reason=f"stopped by job {job.id}",
        )
    job.pending_response = None
    report.responses += 1


def expand(store: Store) -> ExpandReport:
    """Apply every pending response, each in its own transaction."""
    report = ExpandReport()
    with store.transaction() as session:
        pending = list(
            session.scalars(
                select(Job.id)
                .where(Job.state == JobState.COMPLETED, Job.pending_response.is_not(None))
                .order_by(Job.position)
            )
        )
    for job_id in pending:
        try:
            with store.transaction() as session:
                _apply(session, session.get(Job, job_id), report)
        except ResponseError as err:
            with store.transaction() as session:
                move(
                    session,
                    [job_id],
                    JobState.COMPLETED,
                    JobState.FAILED,
                    pending_response=None,
                    reason=f"response: {err}",
                )
    return report
