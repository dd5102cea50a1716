"""Base class of the scheduler adapters and the one function that runs commands.

A :class:`Scheduler` subclass holds only what differs between batch systems: its
submit / poll / cancel commands, its job-id pattern, its directive lines and how
its states map onto :class:`~matdx.hpc.status.BatchState`. Rendering the shell
body of a batch script, validation of ids and running commands are shared here.

Every command runs through :func:`_call`: an argv list (never ``shell=True``),
a timeout, a log line, and on failure a
:class:`~matdx.hpc.errors.CommandFailedError` carrying the exit code, stdout and
stderr. Adapters take a ``runner`` with the signature of :func:`_call`, so tests
can replay recorded scheduler output.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

from matdx.hpc.errors import (
    CommandFailedError,
    CommandNotFoundError,
    CommandTimeoutError,
    ResourceError,
    SubmitError,
)
from matdx.hpc.resources import Resources, to_argv
from matdx.hpc.status import JobStatus

log = logging.getLogger("matdx.hpc")

DEFAULT_TIMEOUT = 60.0
_SHELL_RE = re.compile(r"/[A-Za-z0-9_./-]*/(bash|sh|ksh|zsh|dash)( -l)?")
# Header values were validated by Resources; this second check guards every
# directive line against a future field that forgets to.
_DIRECTIVE_VALUE_RE = re.compile(r"[A-Za-z0-9_.,:=/%+@\[\]()-]+")


def _text(data: str | bytes | None) -> str:
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data or ""


@dataclass(frozen=True)
class CommandResult:
    """Outcome of one command run by :func:`_call`.

    Attributes
    ----------
    argv : tuple of str
        The command line.
    returncode : int
        Exit code.
    stdout, stderr : str
        What the command printed.
    """

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class Runner(Protocol):
    """Signature of :func:`_call`; adapters accept any callable with it."""

    def __call__(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        cwd: str | os.PathLike[str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        check: bool = True,
    ) -> CommandResult: ...


def _call(
    argv: Sequence[str],
    *,
    input: str | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    check: bool = True,
) -> CommandResult:
    """Run one command: argv list, no shell, with a timeout, and log it.

    Parameters
    ----------
    argv : sequence of str
        Program and arguments. Never passed through a shell.
    input : str, optional
        Text written to the command's stdin.
    cwd : path, optional
        Working directory of the command.
    timeout : float
        Seconds before the command is killed.
    check : bool
        Raise :class:`~matdx.hpc.errors.CommandFailedError` on a non-zero exit code.

    Returns
    -------
    CommandResult
        Exit code, stdout and stderr.

    Raises
    ------
    CommandNotFoundError
        If the program is not on ``PATH``.
    CommandTimeoutError
        If the command did not finish within ``timeout`` seconds.
    CommandFailedError
        If ``check`` and the exit code is not 0.
    """
    argv = [str(a) for a in argv]
    if not argv or any("\x00" in a for a in argv):
        raise ValueError(f"invalid command line {argv!r}: empty or holds a NUL character")
    line = shlex.join(argv)
    log.info("$ %s", line)
    start = time.monotonic()
    try:
        proc = subprocess.run(
            argv,
            input=input,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            shell=False,
        )
    except FileNotFoundError as err:
        if cwd is not None and not Path(cwd).is_dir():
            raise CommandFailedError(argv, -1, "", f"working directory {cwd} not found") from err
        raise CommandNotFoundError(argv) from err
    except subprocess.TimeoutExpired as err:
        raise CommandTimeoutError(argv, timeout, _text(err.stdout), _text(err.stderr)) from err
    log.debug(
        "exit %d after %.2f s: %s\nstdout: %s\nstderr: %s",
        proc.returncode, time.monotonic() - start, line, proc.stdout[-2000:], proc.stderr[-2000:],
    )
    if check and proc.returncode != 0:
        raise CommandFailedError(argv, proc.returncode, proc.stdout, proc.stderr)
    return CommandResult(tuple(argv), proc.returncode, proc.stdout, proc.stderr)


@dataclass(frozen=True)
class PartitionInfo:
    """A partition / queue as the scheduler reports it (``None``: not reported).

    Attributes
    ----------
    name : str
        Partition or queue name.
    cpus_per_node : int or None
        Largest CPU count of its nodes.
    memory_per_node : int or None
        Largest memory of its nodes, MiB.
    max_walltime : int or None
        Time limit, s (``None``: unlimited or not reported).
    nodes : int or None
        Number of nodes.
    """

    name: str
    cpus_per_node: int | None = None
    memory_per_node: int | None = None
    max_walltime: int | None = None
    nodes: int | None = None


class Scheduler(ABC):
    """A batch system: render scripts, submit, poll and cancel jobs.

    Parameters
    ----------
    runner : callable, optional
        Runs commands; defaults to :func:`_call`. Tests pass a replaying fake.
    timeout : float
        Timeout of every scheduler command, s.
    shell : str
        Interpreter of the batch script (``/bin/bash``, ``/bin/bash -l`` for a
        login shell that defines ``module``, or another POSIX shell).
    """

    #: Short name used in site profiles (``"slurm"``).
    name: ClassVar[str]
    #: Prefix of directive lines (``"#SBATCH"``).
    directive: ClassVar[str]
    #: Programs this adapter runs; ``check_site`` looks for them on PATH.
    programs: ClassVar[tuple[str, ...]]
    #: Submit command without the script (``("sbatch", "--parsable")``).
    submit_command: ClassVar[tuple[str, ...]]
    #: Cancel command without the job ids (``("scancel",)``).
    cancel_command: ClassVar[tuple[str, ...]]
    #: A job id as printed by the submit command and accepted by the others.
    job_id_re: ClassVar[re.Pattern[str]]

    def __init__(
        self,
        *,
        runner: Runner | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        shell: str = "/bin/bash",
    ) -> None:
        if not _SHELL_RE.fullmatch(shell):
            raise ResourceError(
                f"shell {shell!r} is not accepted: use an absolute path to bash, sh, ksh, zsh "
                "or dash, optionally followed by ' -l'"
            )
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        self.runner: Runner = runner if runner is not None else _call
        self.timeout = float(timeout)
        self.shell = shell

    def __repr__(self) -> str:
        return f"{type(self).__name__}(shell={self.shell!r}, timeout={self.timeout:g})"

    # ------------------------------------------------------------ rendering
    @abstractmethod
    def header_lines(self, resources: Resources) -> list[str]:
        """Directive lines (``#SBATCH --nodes=2`` ...) for ``resources``.

        Raises
        ------
        UnsupportedResourceError
            If the scheduler cannot express a requested resource.
        """

    def _directive(self, *words: str) -> str:
        """One directive line; each word must be free of spaces and shell syntax."""
        for word in words:
            if not _DIRECTIVE_VALUE_RE.fullmatch(word):
                raise ResourceError(f"unsafe value {word!r} in a {self.directive} directive")
        return " ".join((self.directive, *words))

    def render(self, resources: Resources, commands: Iterable[str | Sequence[str]]) -> str:
        """Render a complete batch script.

        Parameters
        ----------
        resources : Resources
            What to request and how to set up the environment.
        commands : iterable of commands
            The main commands, each an argv list or a string split with
            :func:`shlex.split`; run in order, stopping at the first failure.

        Returns
        -------
        str
            The script: shebang, directives, ``cd``, ``module load``, exports, pre
            commands, main commands, post commands, ``exit`` with the main status.

        Raises
        ------
        ResourceError
            If ``commands`` is empty or a command is invalid, or the scheduler
            cannot express a requested resource.
        """
        if isinstance(commands, str):
            raise ResourceError(
                f"invalid commands: expected a list of commands, got the string {commands!r}; "
                "wrap it in a list"
            )
        try:
            main = [to_argv(c) for c in commands]
        except ValueError as err:
            raise ResourceError(f"invalid commands: {err}") from err
        if not main:
            raise ResourceError("invalid commands: at least one command is needed")
        lines = [f"#!{self.shell}", *self.header_lines(resources), ""]
        lines.append(f"# Batch script for {self.name}, rendered by matdx.hpc.")
        if resources.working_directory is not None:
            lines.append(f"cd -- {shlex.quote(resources.working_directory)} || exit 1")
        if resources.modules:
            lines.append(f"module load {shlex.join(resources.modules)} || exit")
        for key, value in resources.script_environment().items():
            lines.append(f"export {key}={shlex.quote(value)}")
        for argv in resources.pre_commands:
            lines.append(f"{shlex.join(argv)} || exit")
        lines.append("matdx_main() {")
        lines.extend(f"    {shlex.join(argv)} || return" for argv in main)
        lines.append("}")
        lines.append("matdx_main")
        lines.append("matdx_status=$?")
        lines.extend(shlex.join(argv) for argv in resources.post_commands)
        lines.append('exit "$matdx_status"')
        return "\n".join(lines) + "\n"

    def write_script(
        self,
        resources: Resources,
        commands: Iterable[str | Sequence[str]],
        path: str | os.PathLike[str],
    ) -> Path:
        """Render and write a batch script atomically and durably (mode 0750): temporary
        file, fsync, rename, fsync of the directory.

        Returns
        -------
        pathlib.Path
            The script's path.
        """
        text = self.render(resources, commands)
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o750)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_directory(path.parent)
        return path

    # ------------------------------------------------------------ job ids
    def check_job_id(self, job_id: str) -> str:
        """Return ``job_id`` if it matches this scheduler's id pattern, else raise ValueError."""
        if not isinstance(job_id, str) or not self.job_id_re.fullmatch(job_id):
            raise ValueError(
                f"{job_id!r} is not a {self.name} job id (pattern {self.job_id_re.pattern})"
            )
        return job_id

    def _unique_ids(self, job_ids: Iterable[str]) -> list[str]:
        if isinstance(job_ids, str):
            job_ids = [job_ids]
        return list(dict.fromkeys(self.check_job_id(j) for j in job_ids))

    @abstractmethod
    def parse_job_id(self, stdout: str) -> str:
        """Extract the job id from the submit command's output.

        Raises
        ------
        SubmitError
            If the output holds no job id.
        """

    def _submit_error(self, stdout: str, stderr: str) -> SubmitError:
        return SubmitError(
            f"{self.name}: no job id in the submit output (stdout {stdout.strip()!r}, "
            f"stderr {stderr.strip()!r})"
        )

    # ------------------------------------------------------------ commands
    def _run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        cwd: str | os.PathLike[str] | None = None,
        check: bool = True,
    ) -> CommandResult:
        return self.runner(argv, input=input, cwd=cwd, timeout=self.timeout, check=check)

    def submit_argv(self, script: Path) -> tuple[list[str], str | None]:
        """Command line and stdin that submit ``script`` (default: submit command + path)."""
        return [*self.submit_command, str(script)], None

    def submit(self, script: str | os.PathLike[str]) -> str:
        """Submit a batch script file.

        The submit command runs in the script's directory, so relative output
        paths are relative to it.

        Parameters
        ----------
        script : path
            A script written by :meth:`write_script` (or by hand).

        Returns
        -------
        str
            The job id.

        Raises
        ------
        FileNotFoundError
            If the script does not exist.
        CommandFailedError
            If the submit command fails (exit code, stdout, stderr attached).
        SubmitError
            If its output holds no job id.
        """
        path = Path(script).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"batch script {path} not found")
        argv, stdin = self.submit_argv(path)
        result = self._run(argv, input=stdin, cwd=path.parent)
        job_id = self.parse_job_id(result.stdout)
        log.info("%s: submitted %s as job %s", self.name, path, job_id)
        return job_id

    @abstractmethod
    def poll(self, job_ids: Iterable[str]) -> dict[str, JobStatus]:
        """Query the state of many jobs with as few commands as the scheduler allows.

        Parameters
        ----------
        job_ids : iterable of str
            Ids returned by :meth:`submit`.

        Returns
        -------
        dict of str to JobStatus
            One entry per distinct requested id, in request order. A job the
            scheduler no longer knows is ``BatchState.UNKNOWN`` with a reason.

        Raises
        ------
        ValueError
            If an id does not look like one of this scheduler's ids.
        CommandError
            If the status command fails for another reason than unknown ids.
        PollError
            If its output cannot be parsed.
        """

    def cancel_argv(self, job_ids: Sequence[str]) -> list[str]:
        """Command line that cancels ``job_ids`` (default: cancel command + ids)."""
        return [*self.cancel_command, *job_ids]

    #: stderr/stdout fragments of a cancel command that only mean "already gone".
    _cancel_gone_re: ClassVar[re.Pattern[str] | None] = None

    def cancel(self, job_ids: Iterable[str]) -> None:
        """Cancel jobs with one command; jobs already finished or unknown are ignored.

        Raises
        ------
        ValueError
            If an id does not look like one of this scheduler's ids.
        CommandFailedError
            If the cancel command fails for another reason.
        """
        ids = self._unique_ids(job_ids)
        if not ids:
            return
        result = self._run(self.cancel_argv(ids), check=False)
        if result.returncode == 0:
            return
        lines = [ln for ln in (result.stdout + "\n" + result.stderr).splitlines() if ln.strip()]
        gone = self._cancel_gone_re
        if lines and gone is not None and all(gone.search(ln) for ln in lines):
            log.info("%s: cancel: jobs already finished or unknown: %s", self.name, lines)
            return
        raise CommandFailedError(result.argv, result.returncode, result.stdout, result.stderr)

    @abstractmethod
    def find_argv(self, name: str) -> list[str]:
        """Command line that lists the queued or running jobs named ``name``."""

    #: output fragment of the find command that only means "no such job".
    _find_none_re: ClassVar[re.Pattern[str] | None] = None

    def parse_found(self, stdout: str, name: str) -> list[str]:
        """Job ids in the find command's output (default: one id per word)."""
        ids = []
        for word in stdout.split():
            try:
                ids.append(self.check_job_id(word))
            except ValueError:
                continue
        return ids

    def find_by_name(self, name: str) -> list[str]:
        """Ids of the queued or running jobs named ``name``, with one command: how a
        submitter finds a job whose submission it may have lost (e.g. killed before it
        could record the id). A failed command is logged and finds nothing."""
        argv = self.find_argv(name)
        result = self._run(argv, check=False)
        if result.returncode != 0:
            gone = self._find_none_re
            if gone is None or not gone.search(result.stdout + result.stderr):
                log.warning("%s: %s failed: %s", self.name, argv[0], result.stderr.strip())
            return []
        return self.parse_found(result.stdout, name)

    # ------------------------------------------------------------ site checks
    @abstractmethod
    def list_partitions(self) -> list[PartitionInfo]:
        """Partitions / queues the scheduler reports (one command)."""


def make_scheduler(name: str, **options: object) -> Scheduler:
    """Create the adapter called ``name`` (``slurm``, ``pbspro``, ``torque``, ``lsf``, ``sge``).

    Parameters
    ----------
    name : str
        Scheduler name as used in site profiles.
    **options
        Keyword arguments of the adapter (``runner``, ``timeout``, ``shell``, and
        adapter-specific ones such as SGE's ``parallel_environment``).

    Raises
    ------
    ValueError
        If ``name`` is not a known scheduler.
    """
    registry = scheduler_classes()
    try:
        cls = registry[name]
    except KeyError:
        raise ValueError(
            f"unknown scheduler {name!r}; known: {', '.join(sorted(registry))}"
        ) from None
    return cls(**options)  # type: ignore[arg-type]


def scheduler_classes() -> dict[str, type[Scheduler]]:
    """Map of scheduler names to adapter classes."""
    from matdx.hpc.lsf import LSFScheduler
    from matdx.hpc.pbs import PBSProScheduler, TorqueScheduler
    from matdx.hpc.sge import SGEScheduler
    from matdx.hpc.slurm import SlurmScheduler

    classes: list[type[Scheduler]] = [
        SlurmScheduler, PBSProScheduler, TorqueScheduler, LSFScheduler, SGEScheduler,
    ]
    return {cls.name: cls for cls in classes}


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` survive a crash of the machine."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
