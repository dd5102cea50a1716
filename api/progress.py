"""A campaign's progress over time and its failed attempts, for the dashboard.

The store keeps no log of state changes, so the timeline is rebuilt from the timestamps it
does keep: a job is *pending* from its creation, *running* from each attempt's start to its
end, *completed* from the end of its successful attempt, and otherwise reaches its final
state (completed without an attempt when a result was reused, failed, cancelled) at its
last update. Jobs that
wait for their parents and jobs that are ready to launch are both *pending* (the move between
the two has no timestamp).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from matdx.store.models import Attempt, AttemptState, Job, JobState

__all__ = ["CATEGORIES", "failed_attempts", "timeline"]

CATEGORIES = ("pending", "running", "completed", "failed", "cancelled")
FINAL = {
    JobState.COMPLETED: "completed",
    JobState.FAILED: "failed",
    JobState.CANCELLED: "cancelled",
}


def _unix(moment: datetime | None) -> float | None:
    if moment is None:
        return None
    if moment.tzinfo is None:  # SQLite keeps UTC without its zone
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _job_events(job: Any, attempts: list[Any]) -> list[tuple[float, str]]:
    """(Unix time s, category entered) for one job, in time order."""
    created = _unix(job.created_at) or 0.0
    events = [(created, "pending")]
    for attempt in attempts:
        start = _unix(attempt.started_at) or _unix(attempt.created_at)
        if start is not None:
            events.append((max(start, events[-1][0]), "running"))
        end = _unix(attempt.finished_at)
        if end is not None:
            done = attempt.state == AttemptState.COMPLETED and job.state == JobState.COMPLETED
            events.append((max(end, events[-1][0]), "completed" if done else "pending"))
    updated = max(_unix(job.updated_at) or created, events[-1][0])
    if job.state in FINAL:
        if events[-1][1] != FINAL[job.state]:
            events.append((updated, FINAL[job.state]))
    elif job.state == JobState.RUNNING and events[-1][1] != "running":
        events.append((updated, "running"))
    elif job.state != JobState.RUNNING and events[-1][1] == "running":
        events.append((updated, "pending"))
    return events


def timeline(session: Session, campaign_id: str, max_points: int = 300) -> dict[str, Any]:
    """Number of the campaign's jobs in each category (:data:`CATEGORIES`) over time.

    Returns
    -------
    dict
        ``t`` (Unix times, s, ascending), ``counts`` (category → list aligned with ``t``) and
        ``categories``; at most ``max_points`` times, always including the last.
    """
    jobs = list(
        session.execute(
            select(Job.id, Job.state, Job.created_at, Job.updated_at).where(
                Job.campaign_id == campaign_id
            )
        )
    )
    attempts: dict[str, list[Any]] = {}
    for row in session.execute(
        select(
            Attempt.job_id,
            Attempt.state,
            Attempt.created_at,
            Attempt.started_at,
            Attempt.finished_at,
        )
        .join(Job, Job.id == Attempt.job_id)
        .where(Job.campaign_id == campaign_id)
        .order_by(Attempt.job_id, Attempt.number)
    ):
        attempts.setdefault(row.job_id, []).append(row)
    changes = sorted(
        (moment, job.id, category)
        for job in jobs
        for moment, category in _job_events(job, attempts.get(job.id, []))
    )
    where: dict[str, str] = {}
    counts = dict.fromkeys(CATEGORIES, 0)
    times: list[float] = []
    series: dict[str, list[int]] = {c: [] for c in CATEGORIES}
    for index, (moment, job_id, category) in enumerate(changes):
        previous = where.get(job_id)
        if previous is not None:
            counts[previous] -= 1
        counts[category] += 1
        where[job_id] = category
        if index + 1 < len(changes) and changes[index + 1][0] == moment:
            continue  # one point per instant
        times.append(moment)
        for name in CATEGORIES:
            series[name].append(counts[name])
    if len(times) > max_points:
        step = len(times) / (max_points - 1)
        keep = sorted({int(i * step) for i in range(max_points - 1)} | {len(times) - 1})
        times = [times[i] for i in keep]
        series = {name: [values[i] for i in keep] for name, values in series.items()}
    return {"categories": list(CATEGORIES), "t": times, "counts": series}


def failed_attempts(session: Session, campaign_id: str, limit: int = 200) -> list[dict[str, Any]]:
    """The campaign's failed and lost attempts, latest first, each with its reason, the
    failure kind, the correction applied before the next attempt (None: rerun unchanged or
    none) and the job's state now."""
    rows = session.execute(
        select(Attempt, Job.name, Job.state, Job.corrections)
        .join(Job, Job.id == Attempt.job_id)
        .where(
            Job.campaign_id == campaign_id,
            Attempt.state.in_([AttemptState.FAILED, AttemptState.LOST]),
        )
        .order_by(Attempt.finished_at.desc(), Attempt.job_id, Attempt.number.desc())
        .limit(limit)
    ).all()
    listed = []
    for attempt, name, state, corrections in rows:
        error = attempt.error or {}
        applied = next((c for c in corrections or [] if c.get("attempt") == attempt.number), None)
        listed.append(
            {
                "job_id": attempt.job_id,
                "job": name,
                "attempt": attempt.number,
                "state": attempt.state,
                "finished_at": _unix(attempt.finished_at),
                "reason": attempt.reason or error.get("last_line") or error.get("message") or "",
                "kind": error.get("kind"),
                "correction": None
                if applied is None
                else {
                    "handler": applied.get("handler"),
                    "description": applied.get("description", ""),
                    "actions": applied.get("actions", []),
                    "inputs_update": applied.get("inputs_update", {}),
                    "resources_update": applied.get("resources_update", {}),
                },
                "job_state": state,
            }
        )
    return listed
