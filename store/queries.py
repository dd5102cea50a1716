"""Read-only queries over campaigns, jobs and records (``select()`` only; the caller owns the
session and its transaction)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from matdx.store.discovery import RECORD_DISCOVERY, row_security_active
from matdx.store.models import Campaign, Job, JobEdge, JobState, Record, Workflow

__all__ = [
    "AmbiguousIdentifier",
    "Failure",
    "blocked_jobs",
    "failures",
    "find",
    "leaf_results",
    "state_counts",
]

MIN_PREFIX = 4


class AmbiguousIdentifier(LookupError):
    """An identifier matches nothing, or more than one thing."""


def find(session: Session, identifier: str) -> tuple[str, str]:
    """Resolve a campaign name, or a (prefix of a) campaign, job or record id.

    Returns
    -------
    (kind, id)
        ``kind`` is ``"campaign"``, ``"job"`` or ``"record"``.

    Raises
    ------
    AmbiguousIdentifier
        If nothing or more than one thing matches.
    """
    named = session.scalars(
        select(Campaign.id).where(Campaign.name == identifier).order_by(Campaign.created_at.desc())
    ).first()
    if named:
        return "campaign", named
    if len(identifier) < MIN_PREFIX:
        raise AmbiguousIdentifier(
            f"{identifier!r}: give a campaign name or at least {MIN_PREFIX} characters of an id"
        )
    # A prefix, not a pattern: % and _ (and the escape character) match only themselves.
    matches: list[tuple[str, str]] = []
    # On PostgreSQL with row-level security, records the role may only discover (a running
    # embargo) are found too: record_discovery holds every record id the role may know of.
    records = (
        RECORD_DISCOVERY.c.record_id
        if row_security_active(session.connection())
        else Record.record_id
    )
    for kind, column in (("campaign", Campaign.id), ("job", Job.id), ("record", records)):
        matches += [
            (kind, found)
            for found in session.scalars(
                select(column).where(column.startswith(identifier, autoescape=True)).limit(2)
            )
        ]
    if not matches:
        raise AmbiguousIdentifier(f"{identifier!r}: no campaign, job or record matches")
    if len(matches) > 1:
        raise AmbiguousIdentifier(
            f"{identifier!r}: matches {', '.join(f'{k} {i[:12]}' for k, i in matches)}"
        )
    return matches[0]


def state_counts(
    session: Session, campaign_ids: Sequence[str] | None = None
) -> dict[str, dict[str, int]]:
    """Number of jobs by campaign id and state."""
    query = select(Job.campaign_id, Job.state, func.count()).group_by(Job.campaign_id, Job.state)
    if campaign_ids is not None:
        query = query.where(Job.campaign_id.in_(campaign_ids))
    counts: dict[str, dict[str, int]] = {}
    for campaign_id, state, n in session.execute(query):
        counts.setdefault(campaign_id, {})[state] = n
    return counts


@dataclass(frozen=True)
class Failure:
    job_id: str
    name: str
    workflow: str
    attempts: int
    reason: str


def failures(session: Session, campaign_id: str, limit: int = 50) -> list[Failure]:
    """FAILED jobs of a campaign with the reason (last line of the error)."""
    rows = session.execute(
        select(Job.id, Job.name, Workflow.name, Job.attempt, Job.reason)
        .join(Workflow, Workflow.id == Job.workflow_id)
        .where(Job.campaign_id == campaign_id, Job.state == JobState.FAILED)
        .order_by(Job.position)
        .limit(limit)
    ).all()
    return [Failure(*row) for row in rows]


def blocked_jobs(session: Session, campaign_id: str) -> int:
    """WAITING jobs of a campaign below a FAILED or CANCELLED job: they cannot start."""
    below = (
        select(Job.id.label("id"))
        .where(Job.campaign_id == campaign_id, Job.state.in_([JobState.FAILED, JobState.CANCELLED]))
        .cte("below", recursive=True)
    )
    below = below.union(select(JobEdge.child_id).join(below, JobEdge.parent_id == below.c.id))
    return (
        session.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.state == JobState.WAITING, Job.id.in_(select(below.c.id)))
        )
        or 0
    )


def leaf_results(session: Session, campaign_id: str) -> list[dict[str, Any]]:
    """For each workflow, the outputs of its completed final jobs (jobs without children
    whose output was not replaced), with the workflow's recipe and the record's formula and
    method (code, functional, potential)."""
    child = aliased(JobEdge)
    rows = session.execute(
        select(
            Workflow.name,
            Workflow.recipe,
            Job.id,
            Job.name,
            Job.reused_from,
            Record.record_id,
            Record.chemical_formula_reduced,
            Record.output,
            Record.code,
            Record.functional,
            Record.potential,
        )
        .join(Job, Job.workflow_id == Workflow.id)
        .join(Record, Record.record_id == Job.record_id)
        .where(
            Workflow.campaign_id == campaign_id,
            Job.state == JobState.COMPLETED,
            Job.output_ref.is_(None),
            ~select(child.child_id).where(child.parent_id == Job.id).exists(),
        )
        .order_by(Job.position)
    ).all()
    return [
        {
            "workflow": workflow,
            "recipe": recipe,
            "job_id": job_id,
            "job": name,
            "reused": reused is not None,
            "record_id": record_id,
            "formula": formula,
            "output": output,
            "code": code,
            "functional": functional,
            "potential": potential,
        }
        for (workflow, recipe, job_id, name, reused, record_id, formula, output, code,
             functional, potential) in rows
    ]
