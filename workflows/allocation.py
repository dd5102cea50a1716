"""Allocation report: how well a campaign's batches used what they were given.

Everything comes from the farms' event logs (``farm-start`` / ``farm-end``, and ``start`` /
``end`` per task with the task's cores) and from when each batch was submitted:

* allocated core-seconds of a batch = slots × (farm end − farm start), s;
* busy core-seconds = Σ over its tasks of cores × (task end − task start), s; a task killed
  with its batch counts until the farm's end;
* utilisation = busy / allocated;
* queue wait = farm start − submission, s (what the batch spent in the scheduler's queue, plus
  the start-up of its script);
* throughput = completed tasks per hour between the first submission and the last farm end.

Time the scheduler granted before the farm started (``mpirun`` start-up) is not in the event
log, so the allocated time is the farm's, which slightly overstates utilisation; the queue wait
includes it instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from sqlalchemy import select

from matdx.hpc.farm import read_events
from matdx.store.models import Attempt, Batch, Campaign, Job
from matdx.store.store import Store

__all__ = ["BatchUsage", "CampaignUsage", "batch_usage", "campaign_usage"]


@dataclass
class BatchUsage:
    """Use of one batch (see the module docstring for the definitions; times in s)."""

    batch_id: str
    scheduler_id: str | None
    executor: str
    state: str
    slots: int
    tasks: int = 0
    completed: int = 0
    submitted: float | None = None  # Unix time
    farm_start: float | None = None
    farm_end: float | None = None
    allocated_core_s: float = 0.0
    busy_core_s: float = 0.0
    reason: str = ""

    @property
    def utilisation(self) -> float | None:
        """busy / allocated core-seconds; None before the farm started."""
        return self.busy_core_s / self.allocated_core_s if self.allocated_core_s > 0 else None

    @property
    def queue_wait_s(self) -> float | None:
        if self.submitted is None or self.farm_start is None:
            return None
        return max(0.0, self.farm_start - self.submitted)

    def as_dict(self) -> dict[str, Any]:
        return {
            "batch": self.batch_id,
            "scheduler_id": self.scheduler_id,
            "executor": self.executor,
            "state": self.state,
            "slots": self.slots,
            "tasks": self.tasks,
            "completed": self.completed,
            "queue_wait_s": self.queue_wait_s,
            "run_s": None
            if self.farm_start is None or self.farm_end is None
            else self.farm_end - self.farm_start,
            "allocated_core_s": self.allocated_core_s,
            "busy_core_s": self.busy_core_s,
            "utilisation": self.utilisation,
            "reason": self.reason,
        }


@dataclass
class CampaignUsage:
    """Use of all batches that ran jobs of one campaign."""

    campaign_id: str
    name: str
    batches: list[BatchUsage] = field(default_factory=list)

    @property
    def allocated_core_s(self) -> float:
        return sum(b.allocated_core_s for b in self.batches)

    @property
    def busy_core_s(self) -> float:
        return sum(b.busy_core_s for b in self.batches)

    @property
    def utilisation(self) -> float | None:
        allocated = self.allocated_core_s
        return self.busy_core_s / allocated if allocated > 0 else None

    @property
    def queue_wait_s(self) -> float:
        """Total queue wait of the batches, s."""
        return sum(b.queue_wait_s or 0.0 for b in self.batches)

    @property
    def completed(self) -> int:
        return sum(b.completed for b in self.batches)

    @property
    def span_s(self) -> float | None:
        """From the first submission to the last farm end, s."""
        starts = [b.submitted for b in self.batches if b.submitted is not None]
        ends = [b.farm_end for b in self.batches if b.farm_end is not None]
        if not starts or not ends:
            return None
        return max(ends) - min(starts)

    @property
    def throughput_per_hour(self) -> float | None:
        """Completed tasks per hour over :attr:`span_s`."""
        span = self.span_s
        return self.completed * 3600.0 / span if span else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign_id,
            "name": self.name,
            "batches": [b.as_dict() for b in self.batches],
            "allocated_core_s": self.allocated_core_s,
            "busy_core_s": self.busy_core_s,
            "utilisation": self.utilisation,
            "queue_wait_s": self.queue_wait_s,
            "completed": self.completed,
            "span_s": self.span_s,
            "throughput_per_hour": self.throughput_per_hour,
        }


def _unix(moment: Any) -> float | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def batch_usage(batch: Batch) -> BatchUsage:
    """The use of one batch, from its farm's event log."""
    info = batch.info or {}
    usage = BatchUsage(
        batch_id=batch.id,
        scheduler_id=batch.scheduler_id,
        executor=batch.executor,
        state=batch.state,
        slots=batch.workers,
        submitted=info.get("submitted_at") or _unix(batch.created_at),
        reason=batch.reason or "",
    )
    started: dict[str, tuple[float, int]] = {}
    last = None
    for event in read_events(batch.directory):
        last = event["t"]
        kind = event["event"]
        if kind == "farm-start":
            usage.farm_start = event["t"]
            usage.slots = int(event.get("slots") or usage.slots)
        elif kind == "start":
            started[event["task"]] = (event["t"], int(event.get("cores", 1)))
            usage.tasks += 1
        elif kind == "end" and event["task"] in started:
            begin, cores = started.pop(event["task"])
            usage.busy_core_s += cores * (event["t"] - begin)
            usage.completed += event.get("status") == "completed"
        elif kind == "farm-end":
            usage.farm_end = event["t"]
    if usage.farm_start is None:
        return usage
    end = usage.farm_end if usage.farm_end is not None else last
    for begin, cores in started.values():  # killed with the batch, or still running
        usage.busy_core_s += cores * max(0.0, end - begin)
    usage.allocated_core_s = usage.slots * max(0.0, end - usage.farm_start)
    return usage


def campaign_usage(store: Store, campaign_id: str) -> CampaignUsage:
    """The use of every batch that ran an attempt of a job of the campaign, oldest first."""
    with store.transaction() as session:
        name = session.scalar(select(Campaign.name).where(Campaign.id == campaign_id))
        batches = list(
            session.scalars(
                select(Batch)
                .where(
                    Batch.id.in_(
                        select(Attempt.batch_id)
                        .join(Job, Job.id == Attempt.job_id)
                        .where(Job.campaign_id == campaign_id)
                    )
                )
                .order_by(Batch.created_at)
            )
        )
    return CampaignUsage(campaign_id, name or "", [batch_usage(b) for b in batches])
