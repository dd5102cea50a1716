"""The local executor: a warm worker pool (or task-farm processes) on this machine, detached
from the tick."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matdx.hpc.farm import EVENTS_FILE, process_start_time
from matdx.store.models import Batch
from matdx.workflows.crash import last_error_line
from matdx.workflows.executors.base import Allocation, BatchStatus, Executor
from matdx.workflows.executors.local_pool import (
    CANCEL_FILE,
    INBOX,
    INBOX_LOCK,
    POOL_FILE,
    WAKE_FIFO,
)

__all__ = ["LocalExecutor"]

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
DEFAULT_IDLE_S = 30.0


class LocalExecutor(Executor):
    """Run batches on this machine, in a warm worker pool or a task farm per batch.

    By default every batch is handed to the store's warm pool
    (:mod:`matdx.workflows.executors.local_pool`): one process per store, started on demand
    by the first launch, reused by every later one, stopped after ``idle_s`` seconds with
    nothing to do. Its workers have the runner imported already, so a batch starts within
    milliseconds. With ``warm=False`` (or when the live pool was started with another
    environment than this process's) a batch runs as its own ``python -m matdx.hpc.farm
    MANIFEST`` process. Pool and farm run in their own session, so they outlive the tick (or
    ``matdx run``) that started them; a later tick harvests what they finished. Worker
    processes run one job at a time with one thread each unless the environment says
    otherwise.

    Parameters
    ----------
    workers
        Jobs to run at once on this machine; defaults to the number of CPUs.
    warm
        Use the warm pool (default) rather than a farm process per batch.
    idle_s
        Seconds the pool waits for work before it stops; default ``$MATDX_POOL_IDLE_S`` or
        30.
    """

    name = "local"

    def __init__(
        self, workers: int | None = None, *, warm: bool = True, idle_s: float | None = None
    ) -> None:
        self.workers = int(workers or os.cpu_count() or 1)
        if self.workers < 1:
            raise ValueError(f"executor.workers: must be at least 1, got {workers}")
        self.warm = warm
        if idle_s is None:
            idle_s = float(os.environ.get("MATDX_POOL_IDLE_S", DEFAULT_IDLE_S))
        if not idle_s >= 0:
            raise ValueError(f"idle_s: must be a number of seconds >= 0, got {idle_s}")
        self.idle_s = idle_s

    def capacity(self, active: list[Batch], busy: Mapping[str, int]) -> int:
        return self.workers - sum(busy.get(b.id, b.workers) for b in active)

    def allocation(
        self, active: list[Batch], busy: Mapping[str, int], spec: Mapping[str, Any]
    ) -> Allocation | None:
        """One batch with the workers free now; no walltime."""
        free = self.capacity(active, busy)
        return Allocation(slots=free, widest=self.workers) if free >= 1 else None

    def start(self, batch: Batch, manifest: str) -> dict[str, Any]:
        env = _environment()
        if self.warm:
            started = self._hand_to_pool(batch, manifest, env)
            if started is not None:
                return started
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

    def _hand_to_pool(
        self, batch: Batch, manifest: str, env: dict[str, str]
    ) -> dict[str, Any] | None:
        """Hand the batch to the store's live pool, starting one if none runs; None if the
        live pool runs in another environment (the caller starts a farm instead)."""
        pool_dir = _pool_dir(batch)
        (pool_dir / INBOX).mkdir(parents=True, exist_ok=True)
        key = _environment_key(env)
        with open(pool_dir / INBOX_LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            live = _live_pool(pool_dir)
            if live is not None and live.get("environment") != key:
                return None
            if live is None:
                log = open(pool_dir / "pool.log", "ab")  # noqa: SIM115 (handed to child)
                with log:
                    process = subprocess.Popen(
                        [sys.executable, "-m", "matdx.workflows.executors.local_pool",
                         str(pool_dir), "--workers", str(self.workers),
                         "--idle-s", str(self.idle_s)],
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        cwd=pool_dir,
                        env=env,
                        start_new_session=True,
                        close_fds=True,
                    )
                live = {"pid": process.pid, "start_time": process_start_time(process.pid),
                        "environment": key}
                _write_atomic(pool_dir / POOL_FILE, live)
            _write_atomic(pool_dir / INBOX / batch.id,
                          {"pid": live["pid"], "manifest": str(manifest)})
        _wake(pool_dir)
        return {"scheduler_id": str(live["pid"]), "host": socket.gethostname()}

    def poll(self, batches: list[Batch]) -> dict[str, BatchStatus]:
        return {batch.id: self._status(batch) for batch in batches}

    def _status(self, batch: Batch) -> BatchStatus:
        if batch.host and batch.host != socket.gethostname():
            raise RuntimeError(
                f"batch {batch.id} runs on {batch.host}; a local batch can only be followed "
                "from the machine that started it"
            )
        started = _farm_start(batch.directory)
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
        if not (status.alive and batch.scheduler_id):
            return
        started = _farm_start(batch.directory)
        live = _live_pool(_pool_dir(batch))
        if (started or {}).get("mode") == "pool" or (
            live is not None and str(live["pid"]) == batch.scheduler_id
        ):
            # The pool runs other batches too: it stops this one's tasks alone.
            (Path(batch.directory) / CANCEL_FILE).touch()
            _wake(_pool_dir(batch))
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(int(batch.scheduler_id), signal.SIGTERM)


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    for name in THREAD_VARIABLES:
        env.setdefault(name, "1")
    return env


def _environment_key(env: Mapping[str, str]) -> str:
    """What identifies the environment jobs run in (pytest's per-phase variable aside)."""
    kept = sorted((k, v) for k, v in env.items() if k != "PYTEST_CURRENT_TEST")
    return hashlib.sha256(json.dumps(kept).encode()).hexdigest()


def _pool_dir(batch: Batch) -> Path:
    """The store's pool directory, ``HOME/pool`` (batch directories are ``HOME/batches/ID``)."""
    return Path(batch.directory).parent.parent / "pool"


def _live_pool(pool_dir: Path) -> dict[str, Any] | None:
    """``pool.json`` if the process it names is alive, else None."""
    try:
        live = json.loads((pool_dir / POOL_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None
    _reap(int(live["pid"]))
    if process_start_time(int(live["pid"])) != live.get("start_time"):
        return None
    return live


def _write_atomic(path: Path, data: Any) -> None:
    """Readers see the whole file or none (not durable: a pool does not survive a crash)."""
    tmp = path.parent / f".{path.name}.{os.getpid()}"
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _wake(pool_dir: Path) -> None:
    """Wake the pool at once (it looks at its inbox within a second anyway)."""
    try:
        fd = os.open(pool_dir / WAKE_FIFO, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # no FIFO yet, or no pool reading it: a starting pool reads its inbox
        return
    with contextlib.suppress(OSError):
        os.write(fd, b"\n")
    os.close(fd)


def _farm_start(directory: str) -> dict[str, Any] | None:
    """The farm's ``farm-start`` event, its first line (not the whole log, which grows with
    every task), or None before the farm wrote it."""
    try:
        with open(Path(directory) / EVENTS_FILE, "rb") as handle:
            first = handle.readline()
    except FileNotFoundError:
        return None
    try:
        event = json.loads(first)
    except ValueError:
        return None
    return event if event.get("event") == "farm-start" else None


def _died(batch: Batch, what: str) -> str:
    """``what``, with the error the farm printed before it died (from its ``farm.log``)."""
    printed = last_error_line(Path(batch.directory) / "farm.log")
    return f"{what}: {printed}" if printed else what


def _reap(pid: int) -> None:
    """Collect the exit status of a farm this process started, so it does not linger as a
    zombie that looks alive."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
