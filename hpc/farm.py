"""The task farm: run a batch of tasks, dependent ones included, inside one allocation.

Usage::

    python -m matdx.hpc.farm MANIFEST          # worker processes on this node
    mpiexec -n N python -m matdx.hpc.farm MANIFEST --mpi   # one worker per MPI rank

A manifest (JSON) lists tasks, each a directory and the ids of tasks in the same manifest it
must wait for, and names a *runner*, ``"module:function"``, that runs one task directory and
returns a status string. The farm hands ready tasks to free workers, starts a task's dependents
as soon as they become ready, and does not start a task that would not finish before the
deadline (walltime). It never talks to a database: it appends one JSON line per event to
``events.jsonl`` next to the manifest, which the tick reads to harvest results.

Runner statuses: ``completed`` releases dependents; ``held``, ``failed`` and ``skipped`` hold
them back (the tick decides). A worker process that dies while running a task ends it as
``crashed``.

This module is generic: it knows nothing of jobs or stores (``matdx.hpc`` is a leaf).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

__all__ = [
    "CLAIM_FILE",
    "EVENTS_FILE",
    "Manifest",
    "Task",
    "TaskGraph",
    "batch_claimant",
    "claim_batch",
    "process_start_time",
    "read_events",
    "run_farm",
]

EVENTS_FILE = "events.jsonl"
CLAIM_FILE = "claim"
ABANDONED = "abandoned"
RELEASING = frozenset({"completed"})


@dataclass(frozen=True)
class Task:
    """One unit of work.

    Attributes
    ----------
    id
        Unique within the manifest.
    dir
        Directory handed to the runner.
    after
        Ids of tasks in the same manifest that must complete first.
    cores
        Worker slots the task occupies (a multi-core code launches its own MPI processes).
    estimate_s
        Expected run time in seconds, used against the deadline; None if unknown.
    """

    id: str
    dir: str
    after: tuple[str, ...] = ()
    cores: int = 1
    estimate_s: float | None = None


@dataclass
class Manifest:
    """A batch of tasks for one farm run.

    Attributes
    ----------
    batch_id
        Identifies the batch in events and logs.
    runner
        ``"module:function"`` called with a task directory, returning a status string.
    tasks
        The tasks, in the order they should be preferred.
    workers
        Worker processes to start when not under MPI.
    deadline
        Unix time after which nothing must still be running (the allocation's end), or None.
    environment
        Variables set in the workers (e.g. ``OMP_NUM_THREADS``).
    """

    batch_id: str
    runner: str
    tasks: list[Task]
    workers: int = 1
    deadline: float | None = None
    environment: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        with open(path) as handle:
            data = json.load(handle)
        tasks = [
            Task(
                t["id"],
                t["dir"],
                tuple(t.get("after", ())),
                int(t.get("cores", 1)),
                t.get("estimate_s"),
            )
            for t in data["tasks"]
        ]
        return cls(
            data["batch_id"],
            data["runner"],
            tasks,
            int(data.get("workers", 1)),
            data.get("deadline"),
            dict(data.get("environment", {})),
        )

    def dump(self, path: str | Path) -> None:
        data = {
            "batch_id": self.batch_id,
            "runner": self.runner,
            "workers": self.workers,
            "deadline": self.deadline,
            "environment": self.environment,
            "tasks": [
                {
                    "id": t.id,
                    "dir": t.dir,
                    "after": list(t.after),
                    "cores": t.cores,
                    "estimate_s": t.estimate_s,
                }
                for t in self.tasks
            ],
        }
        tmp = Path(f"{path}.partial")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)


class TaskGraph:
    """Which tasks may start, given which have ended and how.

    Dependencies on ids outside the manifest are ignored (the tick released those already).
    """

    def __init__(self, tasks: list[Task]) -> None:
        self.tasks = {t.id: t for t in tasks}
        self.order = [t.id for t in tasks]
        self._waiting_on = {t.id: {a for a in t.after if a in self.tasks} for t in tasks}
        self._children: dict[str, list[str]] = {t.id: [] for t in tasks}
        for t in tasks:
            for parent in self._waiting_on[t.id]:
                self._children[parent].append(t.id)
        self._ready = [i for i in self.order if not self._waiting_on[i]]
        self.blocked: set[str] = set()
        self.started: set[str] = set()
        self.ended: dict[str, str] = {}

    def ready(self) -> list[str]:
        """Ready tasks not yet started, in manifest order."""
        self._ready = [i for i in self._ready if i not in self.started]
        return list(self._ready)

    def start(self, task_id: str) -> None:
        self.started.add(task_id)

    def end(self, task_id: str, status: str) -> None:
        self.ended[task_id] = status
        if status not in RELEASING:
            self._block_below(task_id)
            return
        for child in self._children[task_id]:
            self._waiting_on[child].discard(task_id)
            if not self._waiting_on[child] and child not in self.blocked:
                self._ready.append(child)

    def _block_below(self, task_id: str) -> None:
        stack = list(self._children[task_id])
        while stack:
            child = stack.pop()
            if child not in self.blocked:
                self.blocked.add(child)
                stack.extend(self._children[child])

    @property
    def running(self) -> set[str]:
        return self.started - set(self.ended)


class EventLog:
    """Append-only JSON lines, flushed per event; the tick reads them while the farm runs."""

    def __init__(self, path: Path) -> None:
        self._handle = open(path, "a", buffering=1)  # noqa: SIM115 (lives as long as the farm)

    def write(self, event: str, **fields: Any) -> None:
        self._handle.write(json.dumps({"t": time.time(), "event": event, **fields}) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def read_events(directory: str | Path) -> list[dict[str, Any]]:
    """Events written so far by the farm of a batch directory (a partial last line is skipped)."""
    path = Path(directory) / EVENTS_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    events = []
    for line in text.splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def process_start_time(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (Linux), or None if it is gone.

    With the pid it identifies a process even after the pid is reused. A zombie counts as gone.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def claim_batch(directory: str | Path, owner: str) -> bool:
    """Atomically claim a batch directory for ``owner``; False if someone claimed it first.

    The farm claims its batch when it starts; a tick that gives up on a batch whose launch was
    interrupted claims it as ``"abandoned"``. Exactly one of them wins (``O_EXCL`` creation,
    which also holds on NFS v3 and later), so a late-starting farm never runs tasks that were
    already requeued.
    """
    try:
        fd = os.open(Path(directory) / CLAIM_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        handle.write(owner)
    return True


def batch_claimant(directory: str | Path) -> str | None:
    """Who claimed a batch directory, or None if nobody has yet."""
    try:
        return (Path(directory) / CLAIM_FILE).read_text()
    except FileNotFoundError:
        return None


def load_runner(path: str) -> Callable[[str], str]:
    module_name, _, name = path.partition(":")
    return getattr(importlib.import_module(module_name), name)


# -- worker processes ------------------------------------------------------------------------


def _worker_loop(connection: Connection, runner_path: str) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    runner = load_runner(runner_path)
    while True:
        try:
            message = connection.recv()
        except EOFError:
            return
        if message is None:
            return
        task_id, task_dir = message
        try:
            status = runner(task_dir)
        except Exception as error:  # the runner itself broke, not the task
            status = f"crashed: {type(error).__name__}: {error}"
        connection.send((task_id, status))


class _Worker:
    def __init__(self, context: Any, runner_path: str) -> None:
        self.connection, child_end = context.Pipe()
        self.process = context.Process(
            target=_worker_loop, args=(child_end, runner_path), daemon=True
        )
        self.process.start()
        child_end.close()
        self.task: str | None = None

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.process.kill()
        else:
            with contextlib.suppress(OSError):
                self.connection.send(None)
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


class ProcessPool:
    """Worker processes on this node, forked after the runner's module is imported."""

    def __init__(self, workers: int, runner_path: str) -> None:
        load_runner(runner_path)  # import once in the parent: forked workers inherit it
        self._context = multiprocessing.get_context("fork")
        self._runner_path = runner_path
        self.workers = [_Worker(self._context, runner_path) for _ in range(max(1, workers))]

    @property
    def size(self) -> int:
        return len(self.workers)

    def idle(self) -> list[_Worker]:
        return [w for w in self.workers if w.task is None]

    def submit(self, worker: _Worker, task: Task) -> None:
        worker.task = task.id
        worker.connection.send((task.id, task.dir))

    def results(self, timeout: float | None) -> Iterator[tuple[str, str]]:
        """Yield (task id, status) for tasks that ended, waiting up to ``timeout`` seconds."""
        busy = [w for w in self.workers if w.task is not None]
        by_handle: dict[Any, _Worker] = {}
        for w in busy:
            by_handle[w.connection] = w
            by_handle[w.process.sentinel] = w
        for handle in wait(list(by_handle), timeout=timeout):
            worker = by_handle[handle]
            if worker.task is None:
                continue
            task_id = worker.task
            try:
                if worker.connection.poll():
                    _, status = worker.connection.recv()
                    worker.task = None
                    yield task_id, status
                    continue
            except (EOFError, OSError):
                pass
            if not worker.process.is_alive():
                code = worker.process.exitcode
                worker.task = None
                self.workers.remove(worker)
                self.workers.append(_Worker(self._context, self._runner_path))
                yield task_id, f"crashed: worker exit code {code}"

    def close(self, kill: bool = False) -> None:
        """Stop the workers; ``kill`` stops them at once, abandoning running tasks."""
        for worker in self.workers:
            worker.stop(kill=kill or worker.task is not None)


# -- the farm --------------------------------------------------------------------------------


class _Stop(Exception):
    pass


def run_farm(manifest_path: str | Path, *, pool: ProcessPool | None = None) -> int:
    """Run every task of a manifest that can run; returns the number of tasks that did not
    complete (0 when all did)."""
    manifest_path = Path(manifest_path).absolute()
    manifest = Manifest.load(manifest_path)
    if not claim_batch(manifest_path.parent, f"farm {socket.gethostname()} {os.getpid()}"):
        print(
            f"batch {manifest.batch_id} was claimed by {batch_claimant(manifest_path.parent)!r};"
            " not running it",
            file=sys.stderr,
        )
        return len(manifest.tasks)
    os.environ.update(manifest.environment)
    events = EventLog(manifest_path.parent / EVENTS_FILE)
    events.write(
        "farm-start",
        pid=os.getpid(),
        host=socket.gethostname(),
        start_time=process_start_time(os.getpid()),
        batch=manifest.batch_id,
    )

    def _terminate(signum: int, _frame: Any) -> None:
        raise _Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    graph = TaskGraph(manifest.tasks)
    pool = pool or ProcessPool(manifest.workers, manifest.runner)
    reason = "done"
    try:
        _schedule(graph, pool, manifest, events)
    except _Stop as stop:
        reason = f"signal {stop}"
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        pool.close(kill=reason != "done")
        unfinished = len(graph.tasks) - sum(s == "completed" for s in graph.ended.values())
        if reason == "done" and len(graph.ended) < len(graph.tasks):
            reason = "done (some tasks could not start)"
        events.write("farm-end", reason=reason, unfinished=unfinished)
        events.close()
    return unfinished


def _schedule(graph: TaskGraph, pool: ProcessPool, manifest: Manifest, events: EventLog) -> None:
    free_cores = pool.size
    while True:
        for task_id in graph.ready():
            task = graph.tasks[task_id]
            if not pool.idle():
                break
            if task.cores > free_cores:
                continue
            if (
                manifest.deadline is not None
                and task.estimate_s is not None
                and (time.time() + task.estimate_s > manifest.deadline)
            ):
                continue  # would not finish before the walltime: leave it for a later batch
            worker = pool.idle()[0]
            graph.start(task_id)
            free_cores -= task.cores
            events.write("start", task=task_id)
            pool.submit(worker, task)
        if not graph.running:
            return
        for task_id, status in pool.results(timeout=1.0):
            graph.end(task_id, status.split(":", 1)[0])
            free_cores += graph.tasks[task_id].cores
            events.write("end", task=task_id, status=status)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m matdx.hpc.farm",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("manifest", type=Path)
    args = parser.parse_args(argv)
    if not args.manifest.is_file():
        parser.error(f"MANIFEST: no such file {args.manifest}")
    unfinished = run_farm(args.manifest)
    return 0 if unfinished == 0 else 3


if __name__ == "__main__":
    sys.exit(main())
