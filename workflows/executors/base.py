"""The executor interface: start a batch's task farm, tell whether it still runs, stop it."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matdx.store.models import Batch

__all__ = ["Allocation", "BatchStatus", "Executor", "executor_for"]

#: Most tasks in one batch when the executor sets no lower limit.
MAX_TASKS_PER_BATCH = 20_000


@dataclass(frozen=True)
class BatchStatus:
    """What an executor knows of one batch.

    Attributes
    ----------
    alive
        The farm may still start or finish tasks (queued or running).
    reason
        Why it ended, when it did (e.g. ``walltime``, ``cancelled``, ``process died``).
    infrastructure_failure
        The batch ended abnormally (walltime, node failure, killed): its unfinished tasks
        are requeued without spending a retry.
    startup_failure
        The batch ended before its farm started, and its output says why (normalised, see
        :func:`matdx.hpc.startup.startup_cause`): the environment it runs in is broken. The
        same cause twice in a row stops the executor's campaigns (see harvest).
    """

    alive: bool
    reason: str = ""
    infrastructure_failure: bool = False
    startup_failure: str | None = None


@dataclass(frozen=True)
class Allocation:
    """What the batches an executor may start now can hold.

    Attributes
    ----------
    slots
        Task slots (cores) of one batch.
    batches
        How many batches may be started now (queue cap minus batches in the queue).
    max_tasks
        Most tasks in one batch.
    walltime_s
        Wall-clock limit of one batch, s; None when unlimited.
    margin_s
        Time kept free at the end of the walltime, s.
    default_estimate_s
        Run time assumed for a task with no estimate and no history, s; None: unknown.
    widest
        Most cores a batch of this executor can ever have (``slots`` may be fewer when
        only part of the capacity is free now); None: ``slots``.
    """

    slots: int
    batches: int = 1
    max_tasks: int = MAX_TASKS_PER_BATCH
    walltime_s: float | None = None
    margin_s: float = 0.0
    default_estimate_s: float | None = None
    widest: int | None = None

    @property
    def usable_s(self) -> float | None:
        """Time a batch's tasks may fill, s (walltime minus margin)."""
        return None if self.walltime_s is None else max(0.0, self.walltime_s - self.margin_s)


class Executor(abc.ABC):
    """Runs task farms. Subclasses hold only how to start, poll and stop them.

    ``name`` is the executor's key (``local``, ``slurm:SITE``...), stored with each batch.
    """

    name: str

    @abc.abstractmethod
    def capacity(self, active: list[Batch], busy: Mapping[str, int]) -> int:
        """Worker slots free for a new batch, given the active batches of this executor and
        how many slots each still occupies."""

    def allocation(
        self, active: list[Batch], busy: Mapping[str, int], spec: Mapping[str, Any]
    ) -> Allocation | None:
        """What new batches may hold for campaigns with executor section ``spec``, or None
        when none may start now. By default: one batch with the free capacity."""
        free = self.capacity(active, busy)
        return Allocation(slots=free) if free >= 1 else None

    def batch_info(self, spec: Mapping[str, Any], slots: int) -> dict[str, Any]:
        """What :meth:`start` needs to know about a batch of ``slots`` slots, recorded in
        ``Batch.info`` when the batch is claimed (the executor section by default)."""
        return {"spec": dict(spec), "slots": slots}

    @abc.abstractmethod
    def start(self, batch: Batch, manifest: str) -> dict[str, Any]:
        """Start the farm of ``batch`` on ``manifest``; returns batch fields to record
        (``scheduler_id``, ``host``, ...)."""

    @abc.abstractmethod
    def poll(self, batches: list[Batch]) -> dict[str, BatchStatus]:
        """Status of each batch, by id, with as few scheduler queries as possible."""

    @abc.abstractmethod
    def cancel(self, batch: Batch) -> None:
        """Stop a batch; its unfinished tasks are requeued by the next harvest."""

    def adopt(self, batch: Batch) -> dict[str, Any]:
        """Batch fields to record for a batch whose launch was interrupted after its farm
        started (e.g. the ``scheduler_id`` the tick never stored)."""
        return {}

    def abandon(self, batch: Batch) -> None:  # noqa: B027 (optional hook, nothing by default)
        """Clean up after a launch that was interrupted and given up (claimed as abandoned):
        e.g. cancel the batch job it may have submitted. Its farm can never run tasks."""


def executor_for(spec: Mapping[str, Any], home: str | Path = ".") -> Executor:
    """The executor a campaign's ``executor`` section describes.

    Parameters
    ----------
    spec
        The validated section (see :mod:`matdx.workflows.executors.spec`).
    home
        The matdx home: where executors keep their state and batch directories live.

    Raises
    ------
    ValueError
        For an unknown executor type.
    """
    from matdx.workflows.executors.spec import BATCH_TYPES

    kind = spec.get("type", "local")
    if kind == "local":
        from matdx.workflows.executors.local import LocalExecutor

        return LocalExecutor(workers=spec.get("workers"))
    if kind in BATCH_TYPES:
        from matdx.workflows.executors.batch import BatchQueueExecutor

        return BatchQueueExecutor.from_spec(spec, home)
    if kind == "dask":
        from matdx.workflows.executors.dask import DaskExecutor

        return DaskExecutor.from_spec(spec, home)
    if kind == "fireworks":
        from matdx.workflows.executors.fireworks import FireworksExecutor

        return FireworksExecutor.from_spec(spec, home)
    raise ValueError(
        f"executor.type: unknown executor {kind!r}; available: local, "
        f"{', '.join(BATCH_TYPES)}, dask, fireworks"
    )
