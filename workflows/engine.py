"""The engine: one tick advances every campaign of a store by one step.

A tick runs, in order and each in its own transactions (ARCHITECTURE.md, "Data flow"):

1. poll + harvest — finished tasks become records; jobs COMPLETED or ERRORED
2. recover       — failed attempts are corrected, retried, or FAILED for good
3. expand        — responses of completed jobs add jobs to the graph
4. release       — WAITING jobs whose parents completed get resolved inputs (or reuse a result)
5. launch        — READY jobs are packed into batches and started

Only one tick runs per store at a time (the store's tick lock). Killing a tick at any instant
leaves a consistent store, and the next tick carries on from there.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlalchemy import func, select

from matdx.store.models import Campaign, Job, JobState
from matdx.store.store import Store
from matdx.workflows.executors.base import Executor, executor_for
from matdx.workflows.executors.spec import executor_key
from matdx.workflows.expand import ExpandReport, expand
from matdx.workflows.harvest import HarvestReport, harvest
from matdx.workflows.launch import LaunchReport, launch
from matdx.workflows.recover import RecoverReport, recover
from matdx.workflows.release import ReleaseReport, release

__all__ = ["TickReport", "executors_of", "tick"]


@dataclass
class TickReport:
    """What one tick did, and the job counts by state after it."""

    harvest: HarvestReport = field(default_factory=HarvestReport)
    recover: RecoverReport = field(default_factory=RecoverReport)
    expand: ExpandReport = field(default_factory=ExpandReport)
    release: ReleaseReport = field(default_factory=ReleaseReport)
    launch: LaunchReport = field(default_factory=LaunchReport)
    states: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def in_flight(self) -> int:
        """Jobs that will still change without anyone's action."""
        return sum(
            self.states.get(s, 0) for s in (JobState.READY, JobState.RUNNING, JobState.ERRORED)
        )

    def summary(self) -> str:
        """One line, for cron logs (and one more per executor whose jobs were stopped)."""
        counts = " ".join(f"{state.lower()}={n}" for state, n in sorted(self.states.items()))
        halted = "".join(f"\nstopped {message}" for message in self.harvest.halted.values())
        return (
            f"tick {self.seconds * 1000:.0f} ms: harvested {self.harvest.completed} "
            f"failed {self.harvest.errored} requeued {self.harvest.requeued} "
            f"retried {self.recover.retried + self.recover.corrected} "
            f"expanded {self.expand.responses} released {self.release.released} "
            f"reused {self.release.reused} launched {self.launch.launched} in "
            f"{len(self.launch.batches)} batch(es) | {counts}{halted}"
        )


def executors_of(
    store: Store, overrides: Mapping[str, Executor] | None = None
) -> dict[str, Executor]:
    """One executor per executor key the store's campaigns use; ``overrides`` win.

    Keys come from :func:`~matdx.workflows.executors.spec.executor_key`: ``local``, one per
    batch-queue site (``slurm:SITE``), one per Dask scheduler or cluster. The local executor
    runs as many jobs at once as the most any campaign asks for (``executor.workers``), by
    default one per CPU.
    """
    executors: dict[str, Executor] = dict(overrides or {})
    with store.transaction() as session:
        specs = session.scalars(select(Campaign.executor)).all()
    merged: dict[str, dict] = {}
    for spec in specs:
        key = executor_key(spec)
        current = merged.setdefault(key, dict(spec))
        if spec.get("workers") and key == "local":
            current["workers"] = max(current.get("workers") or 0, spec["workers"])
    for key, spec in merged.items():
        if key not in executors:
            executors[key] = executor_for(spec, store.home)
    return executors


def tick(
    store: Store,
    *,
    executors: Mapping[str, Executor] | None = None,
    wait_s: float = 0.0,
    launch_jobs: bool = True,
) -> TickReport:
    """Advance every campaign in ``store`` by one tick.

    Parameters
    ----------
    executors
        Executors by type; by default made from the campaigns' ``executor`` sections.
    wait_s
        How long to wait for another tick to finish before raising
        :class:`~matdx.store.lock.StoreBusy`.
    launch_jobs
        Set False to harvest and advance the graph without starting anything.
    """
    started = time.perf_counter()
    report = TickReport()
    with store.tick_lock(wait_s=wait_s, own_campaigns=True):  # a person ticks their own
        resolved = executors_of(store, executors)
        report.harvest = harvest(store, resolved)
        report.recover = recover(store)
        report.expand = expand(store)
        report.release = release(store)
        if launch_jobs:
            report.launch = launch(store, resolved, report.harvest.busy)
        with store.transaction() as session:
            report.states = dict(
                session.execute(select(Job.state, func.count()).group_by(Job.state)).all()
            )
    report.seconds = time.perf_counter() - started
    return report
