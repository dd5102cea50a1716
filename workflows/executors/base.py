"""The executor interface: start a batch's task farm, tell whether it still runs, stop it."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from matdx.store.models import Batch

__all__ = ["BatchStatus", "Executor", "executor_for"]


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
    """

    alive: bool
    reason: str = ""
    infrastructure_failure: bool = False


class Executor(abc.ABC):
    """Runs task farms. Subclasses hold only how to start, poll and stop them."""

    name: str

    @abc.abstractmethod
    def capacity(self, active: list[Batch], busy: Mapping[str, int]) -> int:
        """Worker slots free for a new batch, given the active batches of this executor and
        how many slots each still occupies."""

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


def executor_for(spec: Mapping[str, Any]) -> Executor:
    """The executor a campaign's ``executor`` section describes.

    Raises
    ------
    ValueError
        For an unknown executor type.
    """
    kind = spec.get("type", "local")
    if kind == "local":
        from matdx.workflows.executors.local import LocalExecutor

        return LocalExecutor(workers=spec.get("workers"))
    raise ValueError(f"executor.type: unknown executor {kind!r}; available: 'local'")
