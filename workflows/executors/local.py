"""The local executor: task-farm processes on this machine, detached from the tick."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matdx.hpc.farm import process_start_time, read_events
from matdx.store.models import Batch
from matdx.workflows.crash import last_error_line
from matdx.workflows.executors.base import Allocation, BatchStatus, Executor

__all__ = ["LocalExecutor"]

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class LocalExecutor(Executor):
    """Run batches as ``python -m matdx.hpc.farm MANIFEST`` processes on this machine.

    The farm runs in its own session, so it outlives the tick (or ``matdx run``) that started
    it; a later tick harvests what it finished. Worker processes run one job at a time with
    one thread each unless the environment says otherwise.

    Parameters
    ----------
    workers
        Jobs to run at once on this machine; defaults to the number of CPUs.
    """

    name = "local"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = int(workers or os.cpu_count() or 1)
        if self.workers < 1:
            raise ValueError(f"executor.workers: must be at least 1, got {workers}")

    def capacity(self, active: list[Batch], busy: Mapping[str, int]) -> int:
        return self.workers - sum(busy.get(b.id, b.workers) for b in active)

    def allocation(
        self, active: list[Batch], busy: Mapping[str, int], spec: Mapping[str, Any]
    ) -> Allocation | None:
        """One batch with the workers free now; no walltime."""
        free = self.capacity(active, busy)
        return Allocation(slots=free, widest=self.workers) if free >= 1 else None

    def start(self, batch: Batch, manifest: str) -> dict[str, Any]:
        env = dict(os.environ)
        for name in THREAD_VARIABLES:
            env.setdefault(name, "1")
        log = open(Path(batch.directory) / "farm.log", "ab")  # noqa: SIM115 (handed to child)
        with log:
            process = subprocess.Popen(
                [sys.executable, "-m", "matdx.hpc.farm", manifest],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=batch.directory,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
        return {"scheduler_id": str(process.pid), "host": socket.gethostname()}

    def poll(self, batches: list[Batch]) -> dict[str, BatchStatus]:
        return {batch.id: self._status(batch) for batch in batches}

    def _status(self, batch: Batch) -> BatchStatus:
        if batch.host and batch.host != socket.gethostname():
            raise RuntimeError(
                f"batch {batch.id} runs on {batch.host}; a local batch can only be followed "
                "from the machine that started it"
            )
        started = next(
            (e for e in read_events(batch.directory) if e["event"] == "farm-start"), None
        )
        if started is not None:
            pid, start_time = started["pid"], started["start_time"]
        elif batch.scheduler_id:
            pid, start_time = int(batch.scheduler_id), None
        else:
            return BatchStatus(alive=False, reason=_died(batch, "never started"),
                               infrastructure_failure=True)
        _reap(pid)
        now = process_start_time(pid)
        if now is not None and (start_time is None or now == start_time):
            return BatchStatus(alive=True)
        return BatchStatus(alive=False, reason=_died(batch, "farm process died"),
                           infrastructure_failure=True)

    def cancel(self, batch: Batch) -> None:
        status = self._status(batch)
        if status.alive and batch.scheduler_id:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(batch.scheduler_id), signal.SIGTERM)


def _died(batch: Batch, what: str) -> str:
    """``what``, with the error the farm printed before it died (from its ``farm.log``)."""
    printed = last_error_line(Path(batch.directory) / "farm.log")
    return f"{what}: {printed}" if printed else what


def _reap(pid: int) -> None:
    """Collect the exit status of a farm this process started, so it does not linger as a
    zombie that looks alive."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
