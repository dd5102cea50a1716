"""The warm worker pool of the local executor: one process per store that outlives ticks.

Usage (started by :class:`~matdx.workflows.executors.local.LocalExecutor`, not by hand)::

    python -m matdx.workflows.executors.local_pool POOLDIR --workers N --idle-s S

A task farm started cold for every batch pays for a Python start, imports and forking its
workers each time, which is most of the cost of a small campaign. The pool is started on
demand by the first launch, forks its workers once (the runner imported), and runs every batch
handed to it until it has had nothing to do for ``--idle-s`` seconds; then it exits.

Hand-over. ``POOLDIR/inbox/BATCH_ID`` names a batch's manifest (written by the executor,
atomically, under the inbox lock), and a byte written to the FIFO ``POOLDIR/wake`` wakes the
pool at once. For each entry the pool claims the batch directory exactly as a farm does
(:func:`~matdx.hpc.farm.claim_batch`), writes ``farm-start`` with its own pid and start time
to the batch's ``events.jsonl``, and schedules the batch's tasks with the farm's own
:class:`~matdx.hpc.farm.TaskGraph` on the shared workers: tasks of every batch are streamed to
workers as they become ready, and ``end`` events (after the batch's ``sync`` files are made
durable) are written as results arrive, so a tick harvests them at once. A task's files are
durable and its ``end`` event written before any of its dependents starts.

Safe to kill. The pool runs in its own session; its workers die with it (``PR_SET_PDEATHSIG``)
so no task outlives a killed pool. A batch whose pool died is seen dead by the executor's
poll (the pid and start time of ``farm-start`` no longer match a live process) and its
unfinished tasks are requeued; an inbox entry not yet taken names the pid of the pool it was
handed to, and a later pool discards it (nobody claimed the batch; the tick sees its pool
dead and requeues its jobs). Only one pool runs per directory (an ``flock`` held for its
lifetime); ``pool.json`` (written by the executor that starts it, removed by the pool when it
stops) names it.
SIGTERM ends every batch with ``farm-end`` ("signal SIGTERM") and stops the workers.

Cancel. ``BATCH_DIR/cancel`` (written by the executor) makes the pool stop that batch's
running tasks and end it with ``farm-end`` ("cancelled").
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import functools
import json
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matdx.hpc.farm import (
    EVENTS_FILE,
    FARM_SYNCS,
    EventLog,
    Manifest,
    ProcessPool,
    TaskGraph,
    claim_batch,
    process_start_time,
    report_ended,
    scheduler_job_id,
    start_and_report,
)

__all__ = [
    "CANCEL_FILE", "INBOX", "INBOX_LOCK", "LOCK_FILE", "POOL_FILE", "WAKE_FIFO", "main", "serve",
]

INBOX = "inbox"
LOCK_FILE = "lock"  # flock'ed by the live pool
INBOX_LOCK = "inbox.lock"  # flock'ed while an entry is handed over or the pool decides to stop
POOL_FILE = "pool.json"  # pid, start time, workers and environment key of the live pool
WAKE_FIFO = "wake"
CANCEL_FILE = "cancel"
RUNNER = "matdx.workflows.run:run_task"
PR_SET_PDEATHSIG = 1
LOCK_WAIT_S = 30.0  # how long a new pool waits for a stopping one to let go of the directory


@dataclass
class _Batch:
    """One batch the pool runs."""

    id: str
    manifest: Manifest
    graph: TaskGraph
    events: EventLog
    directory: Path
    ended: list[tuple[str, str]] = field(default_factory=list)
    cancelled: bool = False


def _die_with_parent(parent: int) -> None:
    """In a forked worker: be killed when the pool dies, so no task outlives it (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the pool died before the call above
        os._exit(1)


class _Stop(Exception):
    """Raised by the signal handler to leave the pool's loop."""


def serve(pool_dir: Path, workers: int, idle_s: float) -> int:
    """Run batches handed to ``pool_dir`` until idle for ``idle_s`` seconds; returns 0.

    Returns 1 at once if another pool holds the directory.
    """
    pool_dir.mkdir(parents=True, exist_ok=True)
    lock = open(pool_dir / LOCK_FILE, "a")  # noqa: SIM115 (held for the process's life)
    waited = time.monotonic()
    while True:  # a pool that is stopping (idle) still holds the lock for a moment
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() - waited > LOCK_WAIT_S:
                return 1
            time.sleep(0.01)
    inbox = pool_dir / INBOX
    inbox.mkdir(exist_ok=True)
    wake_path = pool_dir / WAKE_FIFO
    with contextlib.suppress(FileExistsError):
        os.mkfifo(wake_path)
    wake = os.open(wake_path, os.O_RDONLY | os.O_NONBLOCK)
    keep_open = os.open(wake_path, os.O_WRONLY | os.O_NONBLOCK)  # no EOF when writers leave
    me = {"pid": os.getpid(), "start_time": process_start_time(os.getpid())}

    def _terminate(signum: int, _frame: Any) -> None:
        raise _Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    os.environ[FARM_SYNCS] = "1"  # launch asks the farm to sync job.json and result.json
    pool = ProcessPool(workers, RUNNER, on_start=functools.partial(_die_with_parent, me["pid"]))
    batches: dict[str, _Batch] = {}
    owner: dict[str, _Batch] = {}
    idle_since = time.monotonic()
    reason = "done"
    try:
        while True:
            _take_inbox(pool_dir, me, batches, owner, pool)
            for batch in list(batches.values()):
                if not batch.cancelled and (batch.directory / CANCEL_FILE).exists():
                    _cancel(batch, pool, owner)
                if batch.cancelled:
                    if batch.ended:
                        report_ended(batch.graph, batch.ended, batch.manifest.sync,
                                     batch.events)
                else:  # parents' results durable and logged before their dependents start
                    start_and_report(batch.graph, pool, None, batch.events, batch.ended,
                                     batch.manifest.sync)
                batch.ended = []
            for batch in list(batches.values()):
                if not batch.graph.running and (batch.cancelled or not _startable(batch)):
                    _finish(batch, "cancelled" if batch.cancelled else "done")
                    del batches[batch.id]
                    for task_id in batch.graph.tasks:
                        if owner.get(task_id) is batch:
                            del owner[task_id]
            if batches:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > idle_s and _stop_if_idle(pool_dir, me["pid"]):
                return 0
            timeout = max(0.0, idle_s - (time.monotonic() - idle_since)) if not batches else 1.0
            for task_id, status in pool.results(timeout=timeout, extra=[wake]):
                batch = owner.pop(task_id, None)
                if batch is None:
                    continue
                batch.graph.end(task_id, status.split(":", 1)[0])
                batch.ended.append((task_id, status))
            _drain(wake)
    except _Stop as stop:
        reason = f"signal {stop}"
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for batch in batches.values():
            _finish(batch, reason)
        pool.close(kill=reason != "done")
        _forget(pool_dir, me["pid"])
        os.close(wake)
        os.close(keep_open)
        lock.close()


def _take_inbox(
    pool_dir: Path,
    me: dict[str, Any],
    batches: dict[str, _Batch],
    owner: dict[str, _Batch],
    pool: ProcessPool,
) -> None:
    """Claim the batches handed over since the last look."""
    inbox = pool_dir / INBOX
    for entry in sorted(inbox.iterdir(), key=lambda p: p.stat().st_mtime_ns):
        if entry.name.startswith("."):
            continue
        try:
            handed = json.loads(entry.read_text())
        except (OSError, ValueError):
            entry.unlink(missing_ok=True)
            continue
        entry.unlink(missing_ok=True)
        if handed.get("pid") != me["pid"]:
            continue  # handed to a pool that died before it took it: the tick abandons it
        manifest_path = Path(handed["manifest"])
        try:
            manifest = Manifest.load(manifest_path)
        except (OSError, ValueError, KeyError) as error:
            print(f"batch {entry.name}: unreadable manifest: {error}", file=sys.stderr)
            continue
        directory = manifest_path.parent
        if not claim_batch(directory, f"pool {socket.gethostname()} {me['pid']}"):
            continue  # abandoned by a tick before the pool got to it
        events = EventLog(directory / EVENTS_FILE)
        events.write(
            "farm-start",
            pid=me["pid"],
            host=socket.gethostname(),
            start_time=me["start_time"],
            batch=manifest.batch_id,
            mode="pool",
            slots=manifest.workers,
            scheduler_job_id=scheduler_job_id(),
            deadline=None,
        )
        if manifest.workers > pool.size:
            pool.grow(manifest.workers)
        batch = _Batch(manifest.batch_id, manifest, TaskGraph(manifest.tasks), events, directory)
        for task in manifest.tasks:
            owner[task.id] = batch
        batches[batch.id] = batch


def _startable(batch: _Batch) -> bool:
    """Whether a task of the batch is ready to start (not ended, not started)."""
    return bool(batch.graph.ready())


def _cancel(batch: _Batch, pool: ProcessPool, owner: dict[str, _Batch]) -> None:
    """Stop the batch's running tasks (their workers are replaced); start nothing more."""
    batch.cancelled = True
    for task_id in list(batch.graph.running):
        pool.kill_task(task_id)
        owner.pop(task_id, None)
        batch.graph.end(task_id, "crashed: cancelled")


def _finish(batch: _Batch, reason: str) -> None:
    graph = batch.graph
    if batch.ended:
        with contextlib.suppress(OSError):
            report_ended(graph, batch.ended, batch.manifest.sync, batch.events)
        batch.ended = []
    unfinished = len(graph.tasks) - sum(s == "completed" for s in graph.ended.values())
    if reason == "done" and len(graph.ended) < len(graph.tasks):
        reason = "done (some tasks could not start)"
    with contextlib.suppress(OSError, ValueError):
        batch.events.write("farm-end", reason=reason, unfinished=unfinished)
        batch.events.close()


def _stop_if_idle(pool_dir: Path, pid: int) -> bool:
    """Stop taking batches if none was handed over; False if one just was."""
    with open(pool_dir / INBOX_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if any(not p.name.startswith(".") for p in (pool_dir / INBOX).iterdir()):
            return False
        _forget(pool_dir, pid)  # from now on, launches start a new pool
    return True


def _forget(pool_dir: Path, pid: int) -> None:
    """Remove ``pool.json`` if it names this pool."""
    with contextlib.suppress(FileNotFoundError, ValueError):
        if json.loads((pool_dir / POOL_FILE).read_text()).get("pid") == pid:
            (pool_dir / POOL_FILE).unlink()


def _drain(fd: int) -> None:
    with contextlib.suppress(BlockingIOError, OSError):
        while os.read(fd, 4096):
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m matdx.workflows.executors.local_pool",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pool_dir", type=Path)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--idle-s", type=float, required=True)
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers: must be at least 1, got {args.workers}")
    if args.idle_s < 0:
        parser.error(f"--idle-s: must not be negative, got {args.idle_s}")
    return serve(args.pool_dir, args.workers, args.idle_s)


if __name__ == "__main__":
    sys.exit(main())
