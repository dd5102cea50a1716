"""The task farm: run a batch of tasks, dependent ones included, inside one allocation.

Usage::

    python -m matdx.hpc.farm MANIFEST                    # worker processes on this node
    mpiexec -n N+1 python -m matdx.hpc.farm MANIFEST --mpi   # N worker ranks + a scheduler rank

A manifest (JSON) lists tasks, each a directory and the ids of tasks in the same manifest it
must wait for, and names a *runner*, ``"module:function"``, that runs one task directory and
returns a status string. The farm hands ready tasks to free workers, starts a task's dependents
as soon as they become ready, and does not start a task that would not finish before the
deadline (walltime). It never talks to a database: it appends one JSON line per event to
``events.jsonl`` next to the manifest, which the tick reads to harvest results.

Runner statuses: ``completed`` releases dependents; ``held``, ``failed`` and ``skipped`` hold
them back (the tick decides). A worker process that dies while running a task ends it as
``crashed``.

Slots. A farm has N task slots (worker processes, or worker ranks under MPI); a task with
``cores=k`` occupies k of them while it runs (under MPI: k idle ranks of one host, one of which
runs the task while the others stay idle for the processes the task starts itself).

Deadline. A task is not started when its estimate says it would end after the deadline: the
manifest's ``deadline`` (Unix time), or the farm's own start plus ``walltime_s`` minus
``margin_s`` when it runs inside a batch job whose start time nobody knew when it was written.
Tasks of unknown duration are started while the deadline has not passed.

MPI protocol (``--mpi``; mpi4py is imported only then). Rank 0 claims the batch, tells every
rank whether to go on (broadcast), gathers the host name of each rank, and then schedules with
the same :class:`TaskGraph` as the process pool: it sends ``("run", task id, directory)`` to a
worker rank (tag 1) and receives ``(task id, status)`` back (tag 2); ``("stop",)`` ends a
worker. Idle ranks wait with ``Iprobe`` and a short sleep rather than a blocking receive, which
in Open MPI spins a core. Rank 0 alone writes the event log. A rank 0 stopped by a signal
(walltime, ``scancel``) writes ``farm-end`` and aborts the whole job; nothing is reported for
the tasks that were running, so the tick requeues them without spending a retry.

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
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from matdx.hpc.durable import fsync_many

__all__ = [
    "CLAIM_FILE",
    "EVENTS_FILE",
    "FARM_SYNCS",
    "Manifest",
    "Task",
    "TaskGraph",
    "batch_claimant",
    "claim_batch",
    "process_start_time",
    "read_events",
    "run_farm",
    "scheduler_job_id",
    "start_and_report",
]

EVENTS_FILE = "events.jsonl"
CLAIM_FILE = "claim"
ABANDONED = "abandoned"
RELEASING = frozenset({"completed"})
# Environment variables holding the batch job's id, by scheduler (Slurm, PBS, LSF, SGE).
JOB_ID_VARIABLES = ("SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "JOB_ID")
TAG_TASK, TAG_RESULT = 1, 2
TASK_LOG = "farm-task.log"
# Variables the MPI launcher sets for each rank; a task's own processes must not inherit them.
LAUNCHER_PREFIXES = ("OMPI_", "PMIX_", "PMI_", "OPAL_", "ORTE_", "MPI_LOCAL", "I_MPI_", "HYDRA_")
KEEP_MPI_VARIABLES = ("OMPI_ALLOW_RUN_AS_ROOT", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM")
IDLE_SLEEP_S = 0.02  # how long an idle MPI rank sleeps between probes
# Set in worker processes whose farm makes the manifest's ``sync`` files durable itself.
FARM_SYNCS = "MATDX_FARM_SYNCS"


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
    walltime_s
        Wall-clock limit of the allocation the farm runs in, s; the deadline becomes the
        farm's start plus ``walltime_s - margin_s``. None when there is no limit.
    margin_s
        Time kept free at the end of the walltime, s (start-up, harvesting, clock skew).
    sync
        Names of files in a task directory the farm makes durable (fsync, batched over the
        tasks that ended together) before it writes their ``end`` events; worker processes
        are told so (``MATDX_FARM_SYNCS=1``) and may skip fsyncs of their own.
    """

    batch_id: str
    runner: str
    tasks: list[Task]
    workers: int = 1
    deadline: float | None = None
    environment: dict[str, str] = field(default_factory=dict)
    walltime_s: float | None = None
    margin_s: float = 0.0
    sync: list[str] = field(default_factory=list)

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
            data.get("walltime_s"),
            float(data.get("margin_s") or 0.0),
            [str(name) for name in data.get("sync", [])],
        )

    def dump(self, path: str | Path) -> None:
        data = {
            "batch_id": self.batch_id,
            "runner": self.runner,
            "workers": self.workers,
            "deadline": self.deadline,
            "environment": self.environment,
            "walltime_s": self.walltime_s,
            "margin_s": self.margin_s,
            "sync": self.sync,
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
        with open(tmp, "w") as handle:
            handle.write(json.dumps(data))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        directory = os.open(Path(path).parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def deadline_from(self, start: float) -> float | None:
        """The Unix time after which no task may still run, for a farm started at ``start``."""
        limits = [d for d in (self.deadline,) if d is not None]
        if self.walltime_s is not None:
            limits.append(start + self.walltime_s - self.margin_s)
        return min(limits) if limits else None


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
        # An ordered set: ready tasks not yet started, in manifest order, then as released.
        self._ready = dict.fromkeys(i for i in self.order if not self._waiting_on[i])
        self.blocked: set[str] = set()
        self.started: set[str] = set()
        self.ended: dict[str, str] = {}
        self._running: set[str] = set()

    def ready(self) -> list[str]:
        """Ready tasks not yet started, in manifest order."""
        return list(self._ready)

    def children(self, task_id: str) -> list[str]:
        """Tasks of the manifest that wait for ``task_id``."""
        return self._children[task_id]

    def start(self, task_id: str) -> None:
        self.started.add(task_id)
        self._running.add(task_id)
        self._ready.pop(task_id, None)

    def end(self, task_id: str, status: str) -> None:
        self.ended[task_id] = status
        self._running.discard(task_id)
        if status not in RELEASING:
            self._block_below(task_id)
            return
        for child in self._children[task_id]:
            self._waiting_on[child].discard(task_id)
            if not self._waiting_on[child] and child not in self.blocked:
                self._ready[child] = None

    def _block_below(self, task_id: str) -> None:
        stack = list(self._children[task_id])
        while stack:
            child = stack.pop()
            if child not in self.blocked:
                self.blocked.add(child)
                stack.extend(self._children[child])

    @property
    def running(self) -> set[str]:
        """Tasks started and not ended."""
        return self._running


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


def scheduler_job_id() -> str | None:
    """The id of the batch job this process runs in (Slurm, PBS, LSF or SGE), or None."""
    for name in JOB_ID_VARIABLES:
        if os.environ.get(name):
            return os.environ[name]
    return None


def _run_one(runner: Callable[[str], str], task_dir: str) -> str:
    try:
        return runner(task_dir)
    except Exception as error:  # the runner itself broke, not the task
        return f"crashed: {type(error).__name__}: {error}"


def _task_environment(keep: Iterable[str] = ()) -> dict[str, str]:
    """This process's environment without what the MPI launcher set for this rank, so that
    a task may start MPI programs of its own (``mpirun`` inside a rank fails otherwise)."""
    kept = set(KEEP_MPI_VARIABLES) | set(keep)
    return {
        key: value
        for key, value in os.environ.items()
        if key in kept or not key.startswith(LAUNCHER_PREFIXES)
    }


def run_in_process(
    runner_path: str, task_dir: str, environment: Mapping[str, str] | None = None
) -> str:
    """Run one task in a fresh Python process and return its status.

    Used by MPI ranks (and Dask workers): the task cannot reach the rank's MPI communicator
    (libraries such as ASE use ``COMM_WORLD`` collectives as soon as mpi4py is imported, which
    would hang the farm), cannot change the rank's working directory, and a task that crashes
    does not take the rank down. Its output goes to ``farm-task.log`` in the task directory;
    the status comes back through a pipe.
    """
    read_end, write_end = os.pipe()
    log = Path(task_dir) / TASK_LOG
    try:
        with open(log, "ab") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "matdx.hpc.farm", "--run-task", runner_path, task_dir,
                 "--status-fd", str(write_end)],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                pass_fds=(write_end,),
                env=dict(environment) if environment is not None else None,
                cwd=task_dir,
            )
        os.close(write_end)
        write_end = -1
        with os.fdopen(read_end, "rb") as reader:
            read_end = -1
            status = reader.read().decode(errors="replace").strip()
        code = process.wait()
    finally:
        for fd in (read_end, write_end):
            if fd >= 0:
                os.close(fd)
    if code != 0 or not status:
        lines = log.read_text(errors="replace").strip().splitlines() if log.is_file() else []
        return f"crashed: task process exit code {code}: {lines[-1] if lines else 'no output'}"
    return status


# -- worker processes ------------------------------------------------------------------------


def _worker_loop(
    connection: Connection, runner_path: str, on_start: Callable[[], None] | None = None
) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if on_start is not None:
        on_start()
    runner = load_runner(runner_path)
    while True:
        try:
            message = connection.recv()
        except EOFError:
            return
        if message is None:
            return
        task_id, task_dir = message
        connection.send((task_id, _run_one(runner, task_dir)))


class _Worker:
    def __init__(
        self, context: Any, runner_path: str, on_start: Callable[[], None] | None = None
    ) -> None:
        self.connection, child_end = context.Pipe()
        self.process = context.Process(
            target=_worker_loop, args=(child_end, runner_path, on_start), daemon=True
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
    """Worker processes on this node, forked after the runner's module is imported.

    There is one slot per worker process; a task with ``cores=k`` runs in one worker and keeps
    ``k - 1`` more slots free of other tasks.
    """

    mode = "processes"

    def __init__(
        self, workers: int, runner_path: str, on_start: Callable[[], None] | None = None
    ) -> None:
        load_runner(runner_path)  # import once in the parent: forked workers inherit it
        self._context = multiprocessing.get_context("fork")
        self._runner_path = runner_path
        self._on_start = on_start  # called first in every worker (e.g. a parent-death signal)
        self.workers = [self._new_worker() for _ in range(max(1, workers))]
        self._cores: dict[str, int] = {}

    def _new_worker(self) -> _Worker:
        return _Worker(self._context, self._runner_path, self._on_start)

    def grow(self, workers: int) -> None:
        """Start workers until there are ``workers``."""
        while len(self.workers) < workers:
            self.workers.append(self._new_worker())

    def kill_task(self, task_id: str) -> None:
        """Kill the worker running ``task_id`` (its result is never reported) and replace it."""
        for worker in self.workers:
            if worker.task == task_id:
                worker.stop(kill=True)
                self.workers.remove(worker)
                self.workers.append(self._new_worker())
                self._cores.pop(task_id, None)
                return

    @property
    def size(self) -> int:
        return len(self.workers)

    @property
    def free(self) -> int:
        """Slots not taken by running tasks."""
        return self.size - sum(self._cores.values())

    def idle(self) -> list[_Worker]:
        return [w for w in self.workers if w.task is None]

    def acquire(self, cores: int) -> _Worker | None:
        """A worker for a task needing ``cores`` slots, or None if they are not free now."""
        idle = self.idle()
        return idle[0] if idle and cores <= self.free else None

    def submit(self, worker: _Worker, task: Task) -> dict[str, Any]:
        """Start ``task`` on ``worker``; returns fields for its ``start`` event."""
        worker.task = task.id
        self._cores[task.id] = task.cores
        worker.connection.send((task.id, task.dir))
        return {"pid": worker.process.pid}

    def results(
        self, timeout: float | None, extra: Iterable[Any] = ()
    ) -> Iterator[tuple[str, str]]:
        """Yield (task id, status) for tasks that ended, waiting up to ``timeout`` seconds
        (or until one of the ``extra`` file descriptors is readable)."""
        busy = [w for w in self.workers if w.task is not None]
        by_handle: dict[Any, _Worker] = {}
        for w in busy:
            by_handle[w.connection] = w
            by_handle[w.process.sentinel] = w
        for handle in wait([*by_handle, *extra], timeout=timeout):
            worker = by_handle.get(handle)
            if worker is None:
                continue
            if worker.task is None:
                continue
            task_id = worker.task
            try:
                if worker.connection.poll():
                    _, status = worker.connection.recv()
                    worker.task = None
                    self._cores.pop(task_id, None)
                    yield task_id, status
                    continue
            except (EOFError, OSError):
                pass
            if not worker.process.is_alive():
                code = worker.process.exitcode
                worker.task = None
                self._cores.pop(task_id, None)
                self.workers.remove(worker)
                self.workers.append(self._new_worker())
                yield task_id, f"crashed: worker exit code {code}"

    def close(self, kill: bool = False) -> None:
        """Stop the workers; ``kill`` stops them at once, abandoning running tasks."""
        for worker in self.workers:
            worker.stop(kill=kill or worker.task is not None)


# -- MPI ranks -------------------------------------------------------------------------------


class MPIPool:
    """Worker ranks 1..N-1 of an MPI job, driven from rank 0 (see the module docstring).

    Parameters
    ----------
    comm
        The communicator (``MPI.COMM_WORLD``); every rank must have entered
        :func:`_mpi_worker` or be constructing this pool, because the host names are gathered.
    """

    mode = "mpi"

    def __init__(self, comm: Any) -> None:
        self.comm = comm
        hosts = comm.gather(socket.gethostname(), root=0)
        self.hosts: dict[int, str] = {rank: hosts[rank] for rank in range(1, comm.Get_size())}
        self._idle: list[int] = sorted(self.hosts)
        self._held: dict[str, list[int]] = {}

    @property
    def size(self) -> int:
        return len(self.hosts)

    @property
    def free(self) -> int:
        return len(self._idle)

    def acquire(self, cores: int) -> list[int] | None:
        """``cores`` idle ranks of one host (the first runs the task), or None."""
        by_host: dict[str, list[int]] = {}
        for rank in self._idle:
            by_host.setdefault(self.hosts[rank], []).append(rank)
        # The host with the fewest idle ranks that still fit keeps larger holes for larger tasks.
        fitting = [ranks for ranks in by_host.values() if len(ranks) >= cores]
        if not fitting:
            return None
        return min(fitting, key=len)[:cores]

    def submit(self, ranks: list[int], task: Task) -> dict[str, Any]:
        for rank in ranks:
            self._idle.remove(rank)
        self._held[task.id] = ranks
        self.comm.send(("run", task.id, task.dir), dest=ranks[0], tag=TAG_TASK)
        return {"rank": ranks[0], "host": self.hosts[ranks[0]]}

    def results(self, timeout: float | None) -> Iterator[tuple[str, str]]:
        """Yield (task id, status) of ended tasks; waits up to ``timeout`` s for the first."""
        from mpi4py import MPI

        deadline = None if timeout is None else time.monotonic() + timeout
        got = False
        while self._held:
            status = MPI.Status()
            if self.comm.Iprobe(source=MPI.ANY_SOURCE, tag=TAG_RESULT, status=status):
                task_id, result = self.comm.recv(source=status.Get_source(), tag=TAG_RESULT)
                self._idle.extend(self._held.pop(task_id))
                self._idle.sort()
                got = True
                yield task_id, result
                continue
            if got or (deadline is not None and time.monotonic() >= deadline):
                return
            time.sleep(IDLE_SLEEP_S)

    def close(self, kill: bool = False) -> None:
        """Stop the worker ranks: ``("stop",)`` to each, or abort the whole job (``kill``)."""
        if kill:
            self.comm.Abort(1)
        for rank in self.hosts:
            self.comm.send(("stop",), dest=rank, tag=TAG_TASK)



def _mpi_worker(comm: Any, runner_path: str, environment: Mapping[str, str]) -> None:
    """Loop of a worker rank: run the tasks rank 0 sends, each in a fresh process (see
    :func:`run_in_process`), until it says stop.

    A worker ignores SIGTERM: when the job is cancelled or reaches its walltime, rank 0
    records the end of the farm and aborts every rank. A worker dying of the signal first
    would make the MPI launcher kill rank 0 before it could write ``farm-end``.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    task_environment = _task_environment(keep=environment)
    comm.gather(socket.gethostname(), root=0)  # ready: rank 0 waits for every rank here
    while True:
        while not comm.Iprobe(source=0, tag=TAG_TASK):
            time.sleep(IDLE_SLEEP_S)
        message = comm.recv(source=0, tag=TAG_TASK)
        if message[0] == "stop":
            return
        _, task_id, task_dir = message
        status = run_in_process(runner_path, task_dir, task_environment)
        comm.send((task_id, status), dest=0, tag=TAG_RESULT)


# -- the farm --------------------------------------------------------------------------------


class _Stop(Exception):
    pass


def run_farm(
    manifest_path: str | Path, *, pool: ProcessPool | None = None, mpi: bool = False
) -> int:
    """Run every task of a manifest that can run; returns the number of tasks that did not
    complete (0 when all did).

    Parameters
    ----------
    manifest_path
        The manifest; the event log and the claim file go next to it.
    pool
        Worker processes to use (tests); by default ``manifest.workers`` are started.
    mpi
        Run under MPI: rank 0 schedules, the other ranks run tasks. Every rank calls this
        function; on ranks other than 0 it returns 0 once rank 0 says stop.
    """
    manifest_path = Path(manifest_path).absolute()
    manifest = Manifest.load(manifest_path)
    comm = None
    if mpi:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        os.environ.update(manifest.environment)
        if comm.Get_rank() != 0:
            if comm.bcast(None, root=0):
                _mpi_worker(comm, manifest.runner, manifest.environment)
            return 0
        if comm.Get_size() < 2:
            comm.bcast(False, root=0)
            raise ValueError("--mpi needs at least 2 ranks: rank 0 schedules, the others work")
        try:
            load_runner(manifest.runner)
        except BaseException:
            comm.bcast(False, root=0)
            raise
    claimed = claim_batch(manifest_path.parent, f"farm {socket.gethostname()} {os.getpid()}")
    if comm is not None:
        comm.bcast(claimed, root=0)
    if not claimed:
        print(
            f"batch {manifest.batch_id} was claimed by {batch_claimant(manifest_path.parent)!r};"
            " not running it",
            file=sys.stderr,
        )
        return len(manifest.tasks)
    os.environ.update(manifest.environment)
    started = time.time()
    events = EventLog(manifest_path.parent / EVENTS_FILE)

    def _terminate(signum: int, _frame: Any) -> None:
        raise _Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    graph = TaskGraph(manifest.tasks)
    reason = "done"
    if comm is not None:
        slots = comm.Get_size() - 1
    else:
        slots = pool.size if pool is not None else max(1, manifest.workers)
    try:
        # Written first, so that the time spent starting workers counts as allocated.
        events.write(
            "farm-start",
            pid=os.getpid(),
            host=socket.gethostname(),
            start_time=process_start_time(os.getpid()),
            batch=manifest.batch_id,
            mode="mpi" if comm is not None else getattr(pool, "mode", "processes"),
            slots=slots,
            scheduler_job_id=scheduler_job_id(),
            deadline=manifest.deadline_from(started),
        )
        if comm is not None:
            pool = MPIPool(comm)
        if pool is None:
            if manifest.sync:
                os.environ[FARM_SYNCS] = "1"  # inherited by the forked workers
            pool = ProcessPool(manifest.workers, manifest.runner)
        _schedule(graph, pool, manifest.deadline_from(started), events, manifest.sync)
    except _Stop as stop:
        reason = f"signal {stop}"
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        unfinished = len(graph.tasks) - sum(s == "completed" for s in graph.ended.values())
        if reason == "done" and len(graph.ended) < len(graph.tasks):
            reason = "done (some tasks could not start)"
        events.write("farm-end", reason=reason, unfinished=unfinished)
        events.close()
        if pool is not None:
            pool.close(kill=reason.startswith("signal"))
    return unfinished


def start_ready(
    graph: TaskGraph,
    pool: ProcessPool | MPIPool,
    deadline: float | None,
    events: EventLog,
    hold: set[str] | frozenset[str] = frozenset(),
) -> None:
    """Start ready tasks on free slots, in manifest order, as far as slots allow; the tasks
    in ``hold`` are not started yet."""
    now = time.time()
    for task_id in graph.ready():
        if task_id in hold:
            continue
        task = graph.tasks[task_id]
        late = deadline is not None and (
            now >= deadline or now + (task.estimate_s or 0.0) > deadline
        )
        if late:
            continue  # would not finish before the walltime: leave it for a later batch
        handle = pool.acquire(task.cores)
        if handle is None:
            if pool.free == 0:
                break
            continue  # too large for the slots free now; a smaller one may fit
        graph.start(task_id)
        where = pool.submit(handle, task)
        events.write("start", task=task_id, cores=task.cores, **where)


def start_and_report(
    graph: TaskGraph,
    pool: ProcessPool | MPIPool,
    deadline: float | None,
    events: EventLog,
    ended: list[tuple[str, str]],
    sync: list[str],
) -> None:
    """Start what is ready, and report the tasks that ended, in the order crash consistency
    needs: tasks that depend on none of the ``ended`` ones start first (their slots are not
    kept idle while files are fsynced), then the ended tasks' files are made durable and their
    ``end`` events written, then their dependents start. No crash of the machine can leave a
    dependent's result on disk without its parent's."""
    hold = {child for task_id, _ in ended for child in graph.children(task_id)}
    start_ready(graph, pool, deadline, events, hold)
    if ended:
        report_ended(graph, ended, sync, events)
        if hold:
            start_ready(graph, pool, deadline, events)


def report_ended(
    graph: TaskGraph, ended: list[tuple[str, str]], sync: list[str], events: EventLog
) -> None:
    """Make the ``sync`` files of tasks that ended durable (one batched pass), then write
    their ``end`` events: a task the log says ended has its result on disk.

    Callers do this before they start the tasks' dependents (:func:`start_and_report`): a
    dependent never runs while its parent's result could still be lost to a power cut.
    """
    if sync:
        fsync_many(Path(graph.tasks[t].dir) / name for t, _ in ended for name in sync)
    for task_id, status in ended:
        events.write("end", task=task_id, status=status)


def _schedule(
    graph: TaskGraph,
    pool: ProcessPool | MPIPool,
    deadline: float | None,
    events: EventLog,
    sync: list[str] | None = None,
) -> None:
    """Start ready tasks on free slots in manifest order until nothing more can run.

    Crash consistency: the files of tasks that ended are made durable and their ``end``
    events written *before* their dependents start (:func:`start_and_report`), so that no
    crash of the machine can leave a dependent's result on disk without its parent's (one
    batched fsync pass per group of tasks that ended together).
    """
    ended: list[tuple[str, str]] = []
    while True:
        start_and_report(graph, pool, deadline, events, ended, sync or [])
        ended = []
        if not graph.running:
            return
        for task_id, status in pool.results(timeout=1.0):
            graph.end(task_id, status.split(":", 1)[0])
            ended.append((task_id, status))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m matdx.hpc.farm",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("manifest", type=Path, nargs="?")
    parser.add_argument(
        "--mpi", action="store_true", help="run under mpiexec: rank 0 schedules, others work"
    )
    parser.add_argument(
        "--run-task", nargs=2, metavar=("RUNNER", "DIR"), help=argparse.SUPPRESS
    )  # one task in this process (see run_in_process)
    parser.add_argument("--status-fd", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_task:
        # The task's process ends on SIGTERM even when started by a rank that ignores it.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        runner_path, task_dir = args.run_task
        status = _run_one(load_runner(runner_path), task_dir)
        with os.fdopen(args.status_fd, "w") if args.status_fd else sys.stdout as out:
            out.write(status + "\n")
        return 0
    if args.manifest is None:
        parser.error("MANIFEST is required")
    if not args.manifest.is_file():
        parser.error(f"MANIFEST: no such file {args.manifest}")
    if not args.mpi:
        return 0 if run_farm(args.manifest) == 0 else 3
    from mpi4py import MPI

    try:
        unfinished = run_farm(args.manifest, mpi=True)
    except BaseException:
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        MPI.COMM_WORLD.Abort(1)
        raise
    return 0 if unfinished == 0 else 3


if __name__ == "__main__":
    sys.exit(main())
