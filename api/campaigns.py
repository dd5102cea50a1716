"""``/campaigns``: submit a campaign file (validated as the command line validates it),
status and progress, jobs, results, cancel and rerun."""

from __future__ import annotations

import dataclasses
import tempfile
from typing import Any

import yaml
from fastapi import APIRouter, HTTPException, Request
from pydantic import ValidationError
from sqlalchemy import func, select

from matdx.api import progress
from matdx.api.acting_role import acting_as, transaction_as
from matdx.api.deps import RequesterDep, SessionDep, StoreDep
from matdx.store.access import Purpose, Requester, access_filter, allowed
from matdx.store.models import Campaign, Job, JobState, Workflow
from matdx.store.queries import blocked_jobs, failures, leaf_results, state_counts

__all__ = ["router"]

router = APIRouter(prefix="/campaigns", tags=["campaigns"])


def _signed_in(requester: Requester) -> str:
    if not requester.user:
        raise HTTPException(
            401, "sign in with a token to change campaigns", headers={"WWW-Authenticate": "Bearer"}
        )
    return requester.user


def _visible(session: Any, requester: Requester, campaign_id: str) -> Campaign:
    if not allowed(session, requester, Purpose.READ, [campaign_id], table=Campaign):
        raise HTTPException(
            404, f"campaign {campaign_id}: no such campaign visible to {requester.name}"
        )
    return session.get(Campaign, campaign_id)


def _status(session: Any, campaign: Campaign) -> dict[str, Any]:
    counts = state_counts(session, [campaign.id]).get(campaign.id, {})
    blocked = blocked_jobs(session, campaign.id)
    active = sum(counts.get(s, 0) for s in (JobState.READY, JobState.RUNNING, JobState.ERRORED))
    return {
        "id": campaign.id,
        "name": campaign.name,
        "owner": campaign.owner,
        "project": campaign.project,
        "access": campaign.access,
        "created_at": campaign.created_at.isoformat(),
        "counts": counts,
        "total": sum(counts.values()),
        "workflows": session.scalar(
            select(func.count()).where(Workflow.campaign_id == campaign.id)
        ),
        "blocked": blocked,
        "done": active == 0 and counts.get(JobState.WAITING, 0) == blocked,
        "failures": [dataclasses.asdict(f) for f in failures(session, campaign.id)],
    }


@router.post("", status_code=201)
async def submit_campaign(
    request: Request,
    store: StoreDep,
    requester: RequesterDep,
    force: bool = False,
    force_large: bool = False,
) -> dict[str, Any]:
    """Submit a campaign file (YAML or JSON body). It is validated exactly as ``matdx submit``
    validates a file; structures must be inline or built (files on the server are not read).
    The campaign belongs to the token's user. ``force``: run jobs even if identical results
    exist; ``force_large``: accept the sizes ``matdx submit --force-large`` accepts."""
    from matdx.workflows.campaign import CampaignError, plan_campaign, read_campaign
    from matdx.workflows.structures import StructureError
    from matdx.workflows.submit import SubmitError, submit

    user = _signed_in(requester)
    body = await request.body()
    try:
        spec = yaml.safe_load(body.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as err:
        raise HTTPException(400, f"campaign file: not YAML or JSON: {err}") from err
    if not isinstance(spec, dict):
        raise HTTPException(400, "campaign file: expected a mapping at the top level")
    try:
        campaign = read_campaign(spec)
        with tempfile.TemporaryDirectory() as nowhere:  # relative paths resolve to nothing
            graph = plan_campaign(campaign, nowhere, force_large=force_large)
        if graph.owner and graph.owner != user and not requester.admin:
            raise HTTPException(403, f"owner: {graph.owner!r} is not you ({user})")
        graph = dataclasses.replace(graph, owner=graph.owner or user)
        with acting_as(store, requester):  # written as the token's role
            campaign_id = submit(store, graph, force=force)
    except (CampaignError, StructureError, SubmitError, ValidationError, ValueError) as bad:
        raise HTTPException(422, str(bad)) from bad
    with transaction_as(store, requester) as session:
        return _status(session, session.get(Campaign, campaign_id))


@router.get("")
def list_campaigns(session: SessionDep, requester: RequesterDep) -> list[dict[str, Any]]:
    """Campaigns the requester may read, oldest first, with their progress."""
    rows = session.scalars(
        select(Campaign)
        .where(access_filter(requester, Purpose.READ, table=Campaign))
        .order_by(Campaign.created_at)
    ).all()
    return [_status(session, row) for row in rows]


@router.get("/{campaign_id}")
def campaign_status(
    campaign_id: str, session: SessionDep, requester: RequesterDep
) -> dict[str, Any]:
    """Progress by state, blocked jobs and failures with their reasons."""
    return _status(session, _visible(session, requester, campaign_id))


@router.get("/{campaign_id}/jobs")
def campaign_jobs(
    campaign_id: str, session: SessionDep, requester: RequesterDep
) -> list[dict[str, Any]]:
    """The campaign's jobs in submission order."""
    _visible(session, requester, campaign_id)
    jobs = session.scalars(
        select(Job).where(Job.campaign_id == campaign_id).order_by(Job.position)
    ).all()
    return [
        {
            "id": j.id,
            "name": j.name,
            "state": j.state,
            "reason": j.reason,
            "attempt": j.attempt,
            "failures": j.failures,
            "record_id": j.record_id,
            "reused_from": j.reused_from,
            "corrections": j.corrections,
            "updated_at": j.updated_at.isoformat(),
        }
        for j in jobs
    ]


@router.get("/{campaign_id}/results")
def campaign_results(
    campaign_id: str, session: SessionDep, requester: RequesterDep
) -> list[dict[str, Any]]:
    """The final outputs of each workflow (as ``matdx results`` prints them)."""
    _visible(session, requester, campaign_id)
    return leaf_results(session, campaign_id)


@router.get("/{campaign_id}/timeline")
def campaign_timeline(
    campaign_id: str, session: SessionDep, requester: RequesterDep
) -> dict[str, Any]:
    """Number of jobs pending, running, completed, failed and cancelled over time (Unix
    times, s), rebuilt from the jobs' and attempts' timestamps."""
    _visible(session, requester, campaign_id)
    return progress.timeline(session, campaign_id)


@router.get("/{campaign_id}/attempts")
def campaign_failed_attempts(
    campaign_id: str, session: SessionDep, requester: RequesterDep
) -> list[dict[str, Any]]:
    """Failed and lost attempts, latest first: reason, failure kind and the correction that
    was applied before the next attempt."""
    _visible(session, requester, campaign_id)
    return progress.failed_attempts(session, campaign_id)


@router.get("/{campaign_id}/allocation")
def campaign_allocation(
    campaign_id: str, store: StoreDep, requester: RequesterDep
) -> dict[str, Any]:
    """How the campaign's batches used their allocation: core-seconds allocated and busy,
    utilisation, queue wait (s) per batch and in total, from the task farms' event logs."""
    from matdx.workflows.allocation import campaign_usage

    with transaction_as(store, requester) as session:
        _visible(session, requester, campaign_id)
    with acting_as(store, requester):
        return campaign_usage(store, campaign_id).as_dict()


def _managed_jobs(store: Any, requester: Requester, campaign_id: str) -> list[str]:
    _signed_in(requester)
    with transaction_as(store, requester) as session:
        _visible(session, requester, campaign_id)
        if not allowed(session, requester, Purpose.MANAGE, [campaign_id], table=Campaign):
            raise HTTPException(
                403,
                f"{requester.name} may not change campaign {campaign_id}: "
                "only its owner and its project's members may",
            )
        return list(session.scalars(select(Job.id).where(Job.campaign_id == campaign_id)))


@router.post("/{campaign_id}/cancel")
def cancel_campaign(campaign_id: str, store: StoreDep, requester: RequesterDep) -> dict[str, Any]:
    """Cancel every job of the campaign (and stop its batches)."""
    from matdx.workflows.control import cancel
    from matdx.workflows.engine import executors_of

    jobs = _managed_jobs(store, requester, campaign_id)
    with acting_as(store, requester):  # the database judges each change as the token's role
        return {"cancelled": cancel(store, jobs, executors_of(store))}


@router.post("/{campaign_id}/rerun")
def rerun_campaign(
    campaign_id: str, store: StoreDep, requester: RequesterDep, failed_only: bool = True
) -> dict[str, Any]:
    """Fresh attempts for the campaign's failed (or, with failed_only=false, all) jobs."""
    from matdx.workflows.control import rerun

    jobs = _managed_jobs(store, requester, campaign_id)
    with acting_as(store, requester):  # the database judges each change as the token's role
        if failed_only:
            with store.transaction() as session:
                jobs = list(
                    session.scalars(
                        select(Job.id).where(Job.id.in_(jobs), Job.state == JobState.FAILED)
                    )
                )
        return {"rerun": rerun(store, jobs)}
