"""Executors: where batches of jobs run (this machine, a batch queue, ...)."""

from matdx.workflows.executors.base import BatchStatus, Executor, executor_for
from matdx.workflows.executors.local import LocalExecutor

__all__ = ["BatchStatus", "Executor", "LocalExecutor", "executor_for"]
