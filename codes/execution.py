"""How a program is started on this machine: the :class:`Profile` and the process runner.

A :class:`Profile` is all that is machine-specific about a code: the binary, the MPI launcher,
where the pseudopotentials (or interatomic potentials) live, and extra environment variables.
Templates know nothing of the machine; :func:`execute` starts the argv (never through a shell)
in the run directory with stdout and stderr sent to files, enforces a timeout by killing the
whole process group, asks the run's monitors (:mod:`matdx.codes.monitors`) about once a second
whether to act while it runs, and keeps an execution record (``execution.json``) that the error
handlers read afterwards: it tells a timeout, a monitor's stop or a killed process from a
program error.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from matdx.codes.errors import InputError, ProgramNotFound
from matdx.codes.monitors import Monitor

__all__ = [
    "EXECUTION_FILE",
    "MPIRUN",
    "ExecutionRecord",
    "Profile",
    "execute",
    "read_execution",
]

EXECUTION_FILE = "execution.json"
"""Name of the execution record written into every run directory."""

MPIRUN: tuple[str, ...] = ("mpirun", "-np", "{ranks}")
"""A generic MPI launcher argv; ``{ranks}`` and ``{threads}`` are substituted."""

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class Profile:
    """The machine-specific part of running one program.

    Parameters
    ----------
    binary
        Argv of the program itself, e.g. ``("pw.x",)`` or ``("/opt/qe/bin/pw.x", "-nk", "2")``.
    mpi
        Argv of the MPI launcher placed before ``binary`` when more than one rank is requested,
        with ``{ranks}`` and ``{threads}`` placeholders, e.g. ``("mpirun", "-np", "{ranks}")``
        or ``("srun", "--ntasks={ranks}", "--cpus-per-task={threads}")``. None: serial only.
    pseudo_dir
        Directory of pseudopotentials (Quantum ESPRESSO UPF files) or interatomic potential
        files (LAMMPS). None: the template's default.
    environment
        Extra environment variables for the program (they override the caller's environment).
    install_hint
        How to install the program, quoted in :class:`~matdx.codes.errors.ProgramNotFound`.

    Examples
    --------
    >>> Profile(("pw.x",), mpi=MPIRUN).command(ranks=2)
    ['mpirun', '-np', '2', 'pw.x']
    """

    binary: tuple[str, ...]
    mpi: tuple[str, ...] | None = None
    pseudo_dir: str | None = None
    environment: tuple[tuple[str, str], ...] = field(default=())
    install_hint: str = ""

    def __init__(
        self,
        binary: Sequence[str] | str,
        mpi: Sequence[str] | None = None,
        pseudo_dir: str | Path | None = None,
        environment: Mapping[str, str] | Sequence[tuple[str, str]] = (),
        install_hint: str = "",
    ) -> None:
        binary = (binary,) if isinstance(binary, str) else tuple(str(b) for b in binary)
        if not binary or not binary[0]:
            raise InputError("Profile.binary: expected a non-empty argv, got an empty one")
        pairs = environment.items() if isinstance(environment, Mapping) else environment
        env = tuple(sorted((str(k), str(v)) for k, v in pairs))
        object.__setattr__(self, "binary", binary)
        object.__setattr__(self, "mpi", None if mpi is None else tuple(str(m) for m in mpi))
        object.__setattr__(self, "pseudo_dir", None if pseudo_dir is None else str(pseudo_dir))
        object.__setattr__(self, "environment", env)
        object.__setattr__(self, "install_hint", install_hint)

    def command(self, ranks: int = 1, threads: int = 1) -> list[str]:
        """The argv that starts the program (without the template's own arguments).

        Parameters
        ----------
        ranks
            MPI ranks; 1 runs the binary directly, more prefixes :attr:`mpi`.
        threads
            OpenMP threads per rank (substituted into ``{threads}``; the environment is set by
            :meth:`env`).

        Raises
        ------
        InputError
            If ``ranks`` or ``threads`` is below 1, or ``ranks > 1`` without an MPI launcher.
        """
        if int(ranks) != ranks or ranks < 1:
            raise InputError(f"ranks={ranks!r}: expected an integer >= 1")
        if int(threads) != threads or threads < 1:
            raise InputError(f"threads={threads!r}: expected an integer >= 1")
        if ranks == 1:
            return list(self.binary)
        if self.mpi is None:
            raise InputError(
                f"ranks={ranks} needs an MPI launcher but Profile.mpi is None; "
                f"set e.g. mpi={MPIRUN!r}"
            )
        launcher = [part.format(ranks=int(ranks), threads=int(threads)) for part in self.mpi]
        return [*launcher, *self.binary]

    def check(self, ranks: int = 1) -> None:
        """Raise :class:`ProgramNotFound` unless the binary (and launcher if needed) exist."""
        if shutil.which(self.binary[0]) is None:
            raise ProgramNotFound(self.binary[0], self.install_hint)
        if ranks > 1 and self.mpi is not None and shutil.which(self.mpi[0]) is None:
            raise ProgramNotFound(self.mpi[0], "apt-get install openmpi-bin")

    def env(self, threads: int = 1, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """Environment of the program: ``base`` (default ``os.environ``), then the profile's
        variables, then ``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS``/``MKL_NUM_THREADS`` =
        ``threads``."""
        env = dict(os.environ if base is None else base)
        env.update(dict(self.environment))
        for name in _THREAD_VARIABLES:
            env[name] = str(int(threads))
        return env


@dataclass
class ExecutionRecord:
    """What happened to one process, as kept in ``execution.json``.

    Attributes
    ----------
    argv : list of str
    ranks, threads : int
    timeout_s : float or None
    host : str
    started : str
        ISO 8601 UTC.
    finished : str or None
        None while running, or if the process (or this Python process) was killed before the
        record could be completed: a node that died leaves the record unfinished.
    walltime_s : float or None
    returncode : int or None
        Negative for a signal (as in :mod:`subprocess`).
    timed_out : bool
        True when :func:`execute` killed the program at ``timeout_s``.
    signal : str or None
        Name of the signal that ended the program (e.g. ``"SIGKILL"``), when known; MPI
        launchers report a killed rank as exit code 128 + signal number, decoded here.
    stopped_by : str or None
        Name of the monitor that killed the program (``frozen_output``, ``scf_diverging``).
    monitor_actions : list of dict
        Every monitor action (:class:`~matdx.codes.monitors.Action` fields), in order.
    """

    argv: list[str]
    ranks: int
    threads: int
    timeout_s: float | None
    host: str
    started: str
    finished: str | None = None
    walltime_s: float | None = None
    returncode: int | None = None
    timed_out: bool = False
    signal: str | None = None
    stopped_by: str | None = None
    monitor_actions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.finished is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _write_record(directory: Path, record: ExecutionRecord) -> None:
    path = directory / EXECUTION_FILE
    tmp = path.with_name(f".{EXECUTION_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record.to_dict(), indent=2) + "\n")
    os.replace(tmp, path)


def read_execution(directory: str | Path) -> ExecutionRecord | None:
    """The execution record of a run directory, or None if there is none (or it is unreadable,
    e.g. a directory prepared elsewhere or a recorded output from another machine)."""
    path = Path(directory) / EXECUTION_FILE
    try:
        data = json.loads(path.read_text())
        return ExecutionRecord(**data)
    except (OSError, ValueError, TypeError):
        return None


def _signal_name(returncode: int | None) -> str | None:
    if returncode is None:
        return None
    number = -returncode if returncode < 0 else returncode - 128 if returncode > 128 else None
    if number is None:
        return None
    try:
        return signal.Signals(number).name
    except ValueError:
        return None


def _kill_group(process: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM the process group (so MPI launchers stop their ranks), then SIGKILL."""
    try:
        group = os.getpgid(process.pid)
    except ProcessLookupError:
        return
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, None)):
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _wait(
    process: subprocess.Popen[bytes],
    directory: Path,
    record: ExecutionRecord,
    start: float,
    monitors: Sequence[Monitor],
    poll_s: float,
) -> None:
    """Wait for the process, asking the monitors between waits; returns when it ended or a
    monitor said stop (``record.stopped_by`` set). Raises TimeoutExpired at the timeout."""
    deadline = None if record.timeout_s is None else start + record.timeout_s
    while True:
        wait = poll_s if monitors else None
        if deadline is not None:
            remaining = deadline - time.monotonic()
            wait = remaining if wait is None else min(wait, remaining)
        try:
            process.wait(timeout=max(wait, 0.0) if wait is not None else None)
            return
        except subprocess.TimeoutExpired:
            if deadline is not None and time.monotonic() >= deadline:
                raise
        elapsed = time.monotonic() - start
        for monitor in monitors:
            action = monitor.check(directory, elapsed)
            if action is None:
                continue
            record.monitor_actions.append(asdict(action))
            if action.stop:
                record.stopped_by = action.monitor
            _write_record(directory, record)
            if action.stop:
                return


def execute(
    argv: Sequence[str],
    directory: str | Path,
    *,
    env: Mapping[str, str],
    stdout: str,
    stderr: str,
    timeout_s: float | None = None,
    ranks: int = 1,
    threads: int = 1,
    grace_s: float = 10.0,
    monitors: Sequence[Monitor] = (),
    poll_s: float = 1.0,
) -> ExecutionRecord:
    """Run ``argv`` in ``directory``; stdout and stderr go to files there.

    The program gets its own process group; on timeout (or if this Python process is
    interrupted) the whole group receives SIGTERM and, after ``grace_s`` seconds, SIGKILL.
    ``execution.json`` is written before the start (unfinished) and completed at the end.

    Parameters
    ----------
    argv
        Program and arguments; started without a shell.
    directory
        Working directory; must exist.
    env
        Complete environment of the program.
    stdout, stderr
        File names, relative to ``directory``.
    timeout_s
        Wall-clock limit in seconds, or None.
    ranks, threads
        Recorded for the error handlers (an out-of-memory correction halves the ranks).
    grace_s
        Seconds between SIGTERM and SIGKILL after a timeout or a monitor's stop.
    monitors
        Asked every ``poll_s`` seconds while the program runs; the first that says stop has
        the program killed (``stopped_by``), and every action is recorded.
    poll_s
        Seconds between two rounds of the monitors.

    Returns
    -------
    ExecutionRecord
    """
    directory = Path(directory)
    record = ExecutionRecord(
        argv=list(argv),
        ranks=int(ranks),
        threads=int(threads),
        timeout_s=timeout_s,
        host=socket.gethostname(),
        started=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    _write_record(directory, record)
    start = time.monotonic()
    with open(directory / stdout, "wb") as out, open(directory / stderr, "wb") as err:
        process = subprocess.Popen(  # an argv list: no shell
            list(argv),
            cwd=directory,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=dict(env),
            start_new_session=True,
        )
        try:
            _wait(process, directory, record, start, monitors, poll_s)
            if record.stopped_by is not None:  # a monitor said stop
                _kill_group(process, grace_s)
        except subprocess.TimeoutExpired:
            record.timed_out = True
            _kill_group(process, grace_s)
        except BaseException:
            # interrupted (Ctrl-C, the worker being stopped): stop the program and say so
            _kill_group(process, grace_s)
            record.returncode = process.returncode
            record.signal = _signal_name(process.returncode)
            record.walltime_s = round(time.monotonic() - start, 3)
            record.finished = datetime.now(UTC).isoformat(timespec="seconds")
            _write_record(directory, record)
            raise
    record.walltime_s = round(time.monotonic() - start, 3)
    record.returncode = process.returncode
    record.signal = "SIGKILL" if record.timed_out and process.returncode is None else None
    record.signal = record.signal or _signal_name(process.returncode)
    record.finished = datetime.now(UTC).isoformat(timespec="seconds")
    _write_record(directory, record)
    return record
