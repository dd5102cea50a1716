"""Packing: group ready jobs (with the jobs below them) into as few batches as limits allow.

The launch step hands over candidate tasks in submission order, parents before children, each
with its cores and an estimated run time, and an :class:`~matdx.workflows.executors.base.
Allocation` (slots and walltime of one batch, how many batches may start, most tasks per
batch). Policy:

1. **Units.** Tasks joined by dependencies form one unit (a relax → static → fit chain, an EOS
   fan-out and its fit): a unit goes into one batch whole, so its dependent jobs run in the
   same allocation without waiting for a tick. A unit with more tasks than a batch may hold is
   cut after its first tasks; the jobs cut off stay for a later launch.
2. **First fit, in submission order.** Each unit goes into the first open batch where it fits,
   else into a new batch while the queue cap allows, else it waits for a later tick. It fits
   when the batch stays within ``max_tasks`` and, when every run time is known, the batch's
   simulated schedule ends within the walltime minus the margin. The simulation appends the
   unit's tasks to the batch's slots the way a list scheduler would: each task starts when its
   parents have ended and its cores are free.
3. **Size.** A batch asks for no more slots than it can use: the slots its simulated schedule
   occupies, or, with unknown run times, the cores of all its tasks, up to the allocation's.
4. **Order inside a batch.** Longest remaining path first (the task's own estimate plus its
   longest chain of dependents), then most cores, so that long chains and wide tasks start
   early and small tasks fill the gaps at the end (the farm starts ready tasks in this order).

Without run-time estimates a batch is filled up to ``max_tasks``; the farm then starts no task
after the walltime's margin begins, and what it could not run is requeued for a later batch
without spending a retry.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field

from matdx.workflows.executors.base import Allocation

__all__ = ["PackTask", "PackedBatch", "farm_order", "pack", "units_of"]


@dataclass(frozen=True)
class PackTask:
    """One job to place.

    Attributes
    ----------
    id
        Job id.
    cores
        Slots it occupies.
    estimate_s
        Expected run time, s; None when unknown.
    after
        Ids of candidate tasks it depends on (parents outside the candidates are done).
    """

    id: str
    cores: int = 1
    estimate_s: float | None = None
    after: tuple[str, ...] = ()


@dataclass
class PackedBatch:
    """Tasks placed into one batch, and its simulated schedule."""

    slots: int
    tasks: list[PackTask] = field(default_factory=list)
    free_at: list[float] = field(default_factory=list)  # per slot, when it is free again, s
    ends: dict[str, float] = field(default_factory=dict)  # per task, simulated end, s
    timed: bool = True  # every task has a run time estimate

    def __post_init__(self) -> None:
        if not self.free_at:
            self.free_at = [0.0] * self.slots

    @property
    def makespan_s(self) -> float:
        return max(self.free_at, default=0.0)

    @property
    def slots_needed(self) -> int:
        """Slots the batch asks for (see the module docstring, item 3)."""
        if self.timed:
            used = sum(1 for t in self.free_at if t > 0.0)
        else:
            used = sum(t.cores for t in self.tasks)
        widest = max((t.cores for t in self.tasks), default=1)
        return max(1, widest, min(self.slots, used))

    def try_add(self, unit: Sequence[PackTask], allocation: Allocation) -> bool:
        """Add ``unit`` if the batch stays within the limits; False (unchanged) otherwise."""
        if len(self.tasks) + len(unit) > allocation.max_tasks:
            return False
        timed = self.timed and all(t.estimate_s is not None for t in unit)
        free_at, ends = list(self.free_at), dict(self.ends)
        if timed:
            for task in unit:
                ready = max((ends[p] for p in task.after if p in ends), default=0.0)
                chosen = heapq.nsmallest(task.cores, range(len(free_at)), key=free_at.__getitem__)
                begin = max([ready, *(free_at[i] for i in chosen)])
                end = begin + float(task.estimate_s or 0.0)
                for i in chosen:
                    free_at[i] = end
                ends[task.id] = end
            usable = allocation.usable_s
            if usable is not None and self.tasks and max(free_at) > usable:
                return False
        self.tasks.extend(unit)
        self.timed = timed
        if timed:
            self.free_at, self.ends = free_at, ends
        return True


def units_of(tasks: Sequence[PackTask]) -> list[list[PackTask]]:
    """Tasks grouped by dependency (connected components), each in the given order, units in
    the order of their first task."""
    parent_of: dict[str, str] = {t.id: t.id for t in tasks}

    def root(task_id: str) -> str:
        while parent_of[task_id] != task_id:
            parent_of[task_id] = parent_of[parent_of[task_id]]
            task_id = parent_of[task_id]
        return task_id

    for task in tasks:
        for parent in task.after:
            if parent in parent_of:
                parent_of[root(task.id)] = root(parent)
    units: dict[str, list[PackTask]] = {}
    for task in tasks:
        units.setdefault(root(task.id), []).append(task)
    return list(units.values())


def _cut(unit: list[PackTask], limit: int) -> list[PackTask]:
    """The first ``limit`` tasks of a unit whose parents are all kept (parents come first)."""
    kept: list[PackTask] = []
    ids: set[str] = set()
    members = {t.id for t in unit}
    for task in unit:
        if len(kept) == limit:
            break
        if all(p in ids or p not in members for p in task.after):
            kept.append(task)
            ids.add(task.id)
    return kept


def pack(tasks: Sequence[PackTask], allocation: Allocation) -> list[PackedBatch]:
    """Place tasks into at most ``allocation.batches`` batches (see the module docstring).

    Tasks wider than a batch must be removed by the caller. Tasks not placed are left out.
    """
    batches: list[PackedBatch] = []
    for unit in units_of(tasks):
        if len(unit) > allocation.max_tasks:
            unit = _cut(unit, allocation.max_tasks)
        if any(batch.try_add(unit, allocation) for batch in batches):
            continue
        if len(batches) >= allocation.batches:
            continue  # no room left this time; smaller units may still fit an open batch
        batch = PackedBatch(slots=allocation.slots)
        batch.try_add(unit, allocation)  # an empty batch takes any unit (the farm copes)
        batches.append(batch)
    return batches


def farm_order(tasks: Sequence[PackTask]) -> list[PackTask]:
    """The order the farm should prefer (see the module docstring, item 4); a stable sort, so
    tasks without estimates keep their submission order among equals."""
    children: dict[str, list[str]] = {t.id: [] for t in tasks}
    for task in tasks:
        for parent in task.after:
            if parent in children:
                children[parent].append(task.id)
    by_id = {t.id: t for t in tasks}
    remaining: dict[str, float] = {}
    for task in reversed(tasks):  # children come after parents, so they are done first
        below = max((remaining[c] for c in children[task.id]), default=0.0)
        remaining[task.id] = float(task.estimate_s or 0.0) + below
    index = {t.id: i for i, t in enumerate(tasks)}
    return sorted(tasks, key=lambda t: (-remaining[t.id], -by_id[t.id].cores, index[t.id]))
