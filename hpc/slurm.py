"""Slurm adapter: ``sbatch --parsable``, ``squeue`` + ``scontrol show job``, ``scancel``.

Polling runs one ``squeue --states=all`` for every id, which reports pending,
running and recently finished jobs with their raw exit status. Ids it does not
list are looked up with ``scontrol show job`` one by one; a job slurmctld has
purged (``MinJobAge`` seconds after it ended) is reported ``UNKNOWN``. ``sacct``
is not used: without slurmdbd it prints nothing and still exits 0.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import ClassVar

from matdx.hpc.errors import CommandFailedError, PollError
from matdx.hpc.resources import Resources, format_hms
from matdx.hpc.scheduler import PartitionInfo, Scheduler
from matdx.hpc.status import BatchState, JobStatus, signal_from_status

#: Slurm job states (``squeue %T``, ``scontrol JobState``) → common state.
SLURM_STATES: dict[str, BatchState] = {
    "PENDING": BatchState.QUEUED,
    "CONFIGURING": BatchState.QUEUED,
    "REQUEUED": BatchState.QUEUED,
    "REQUEUE_HOLD": BatchState.QUEUED,
    "REQUEUE_FED": BatchState.QUEUED,
    "RESV_DEL_HOLD": BatchState.QUEUED,
    "RUNNING": BatchState.RUNNING,
    "COMPLETING": BatchState.RUNNING,
    "SUSPENDED": BatchState.RUNNING,
    "STOPPED": BatchState.RUNNING,
    "SIGNALING": BatchState.RUNNING,
    "STAGE_OUT": BatchState.RUNNING,
    "RESIZING": BatchState.RUNNING,
    "UPDATE_DB": BatchState.RUNNING,
    "COMPLETED": BatchState.COMPLETED,
    "FAILED": BatchState.FAILED,
    "SPECIAL_EXIT": BatchState.FAILED,
    "TIMEOUT": BatchState.TIMEOUT,
    "DEADLINE": BatchState.TIMEOUT,
    "OUT_OF_MEMORY": BatchState.OUT_OF_MEMORY,
    "CANCELLED": BatchState.CANCELLED,
    "PREEMPTED": BatchState.CANCELLED,
    "REVOKED": BatchState.CANCELLED,
    "NODE_FAIL": BatchState.NODE_FAIL,
    "BOOT_FAIL": BatchState.NODE_FAIL,
}

_SQUEUE_FORMAT = "JobID:40|,State:24|,exit_code:12|,Reason:200|"
_INVALID_ID = "Invalid job id specified"
_SCONTROL_FIELD_RE = {
    key: re.compile(rf"(?:^|\s){key}=(\S*)") for key in ("JobId", "JobState", "Reason")
}
_SCONTROL_EXIT_RE = re.compile(r"(?:^|\s)ExitCode=(\d+):(\d+)")
_SLURM_TIME_RE = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?")


def parse_slurm_time(text: str) -> int | None:
    """Parse a Slurm time limit (``sinfo %l``) into seconds; ``None`` for unlimited.

    Slurm's forms: ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``, ``D-HH:MM:SS``.

    Examples
    --------
    >>> parse_slurm_time("1-12:00:00"), parse_slurm_time("30:00"), parse_slurm_time("infinite")
    (129600, 1800, None)
    """
    text = text.strip()
    if text.lower() in ("infinite", "unlimited", "n/a", ""):
        return None
    match = _SLURM_TIME_RE.fullmatch(text)
    if not match:
        raise ValueError(f"{text!r} is not a Slurm time")
    days, first, second, third = match.groups()
    if days is not None:  # D-HH[:MM[:SS]]
        hours, minutes, seconds = int(first), int(second or 0), int(third or 0)
        return ((int(days) * 24 + hours) * 60 + minutes) * 60 + seconds
    if third is not None:  # HH:MM:SS
        return (int(first) * 60 + int(second)) * 60 + int(third)
    if second is not None:  # MM:SS
        return int(first) * 60 + int(second)
    return int(first) * 60  # MM


def format_slurm_time(seconds: int) -> str:
    """Format seconds as Slurm's ``D-HH:MM:SS`` (``HH:MM:SS`` below one day).

    Slurm counts whole minutes and rounds a partial minute up.

    Examples
    --------
    >>> format_slurm_time(5400), format_slurm_time(93784)
    ('01:30:00', '1-02:03:04')
    """
    days, rest = divmod(int(seconds), 86400)
    return f"{days}-{format_hms(rest)}" if days else format_hms(rest)


def map_slurm_state(
    state: str, reason: str = "", exit_code: int | None = None, signal: int | None = None,
    job_id: str = "",
) -> JobStatus:
    """Map a Slurm state, reason and exit status onto a :class:`JobStatus`.

    Parameters
    ----------
    state : str
        Slurm state name (``"TIMEOUT"``); flags after a space or ``+`` are ignored.
    reason : str
        Slurm's reason (``"NonZeroExitCode"``); ``"None"`` counts as empty.
    exit_code, signal : int or None
        Exit code and signal of the batch script; dropped for active jobs.
    job_id : str
        The job id.

    Returns
    -------
    JobStatus
        An unrecognised state maps to ``UNKNOWN`` with the state in the reason.
    """
    native = state.strip().split()[0].split("+")[0].upper() if state.strip() else ""
    reason = "" if reason.strip() in ("None", "(null)") else reason.strip()
    common = SLURM_STATES.get(native)
    if common is None:
        return JobStatus(job_id, BatchState.UNKNOWN, None, None,
                         f"unrecognised Slurm state {state!r}", native)
    if common.is_active:
        exit_code = signal = None
    if native == "PREEMPTED":
        reason = reason or "preempted"
    return JobStatus(job_id, common, exit_code, signal, reason, native)


class SlurmScheduler(Scheduler):
    """Slurm: ``sbatch``, ``squeue``/``scontrol``, ``scancel``, ``sinfo``.

    Parameters
    ----------
    **kwargs
        See :class:`~matdx.hpc.scheduler.Scheduler`.

    Examples
    --------
    >>> from matdx.hpc.resources import Resources
    >>> print(SlurmScheduler().render(Resources(job_name="demo", walltime="1h"), ["hostname"]))
    ... # doctest: +ELLIPSIS
    #!/bin/bash
    #SBATCH --job-name=demo
    ...
    """

    name: ClassVar[str] = "slurm"
    directive: ClassVar[str] = "#SBATCH"
    programs: ClassVar[tuple[str, ...]] = ("sbatch", "squeue", "scontrol", "scancel", "sinfo")
    submit_command: ClassVar[tuple[str, ...]] = ("sbatch", "--parsable")
    cancel_command: ClassVar[tuple[str, ...]] = ("scancel",)
    job_id_re: ClassVar[re.Pattern[str]] = re.compile(r"\d{1,19}")
    _submit_re: ClassVar[re.Pattern[str]] = re.compile(r"^(\d+)(?:;[A-Za-z0-9_.-]+)?$", re.M)
    _cancel_gone_re = re.compile(
        r"Invalid job id specified|already completing or completed|Job has already finished"
    )

    def header_lines(self, resources: Resources) -> list[str]:
        """``#SBATCH`` lines; memory is per node (``--mem``).

        ``--no-requeue``: a job whose node failed is not restarted by Slurm; matdx requeues
        its unfinished tasks itself (a restarted farm would find its batch already claimed,
        after Slurm's requeue delay).
        """
        d = self._directive
        r = resources
        lines = [
            d(f"--job-name={r.job_name}"),
            d(f"--nodes={r.nodes}"),
            d(f"--ntasks-per-node={r.ranks_per_node}"),
            d(f"--cpus-per-task={r.threads_per_rank}"),
            d(f"--time={format_slurm_time(r.walltime)}"),
            d("--no-requeue"),
        ]
        if r.memory is not None:
            lines.append(d(f"--mem={r.memory}M"))
        if r.partition:
            lines.append(d(f"--partition={r.partition}"))
        if r.account:
            lines.append(d(f"--account={r.account}"))
        if r.qos:
            lines.append(d(f"--qos={r.qos}"))
        if r.gpus_per_node:
            lines.append(d(f"--gpus-per-node={r.gpus_per_node}"))
        if r.exclusive:
            lines.append(d("--exclusive"))
        if r.output:
            lines.append(d(f"--output={r.output}"))
        if r.error:
            lines.append(d(f"--error={r.error}"))
        if r.working_directory:
            lines.append(d(f"--chdir={r.working_directory}"))
        return lines

    def parse_job_id(self, stdout: str) -> str:
        """``sbatch --parsable`` prints ``ID`` or ``ID;CLUSTER``."""
        match = self._submit_re.search(stdout.strip())
        if not match:
            raise self._submit_error(stdout, "")
        return match.group(1)

    # ------------------------------------------------------------ polling
    def find_argv(self, name: str) -> list[str]:
        return ["squeue", "--noheader", "--format=%i", f"--name={name}"]

    def squeue_argv(self, job_ids: list[str]) -> list[str]:
        """The one ``squeue`` command that reports all ``job_ids``."""
        return [
            "squeue", "--noheader", "--states=all", f"--jobs={','.join(job_ids)}",
            f"--Format={_SQUEUE_FORMAT}",
        ]

    def parse_squeue(self, stdout: str) -> dict[str, JobStatus]:
        """Parse ``squeue --Format`` output written by :meth:`squeue_argv`."""
        found: dict[str, JobStatus] = {}
        for line in stdout.splitlines():
            if not line.strip():
                continue
            parts = [p.strip() for p in line.split("|")]
            if len(parts) < 4 or not parts[0]:
                raise PollError(f"slurm: cannot parse squeue line {line!r}")
            job_id, state, raw_status, reason = parts[:4]
            exit_code = signal = None
            if raw_status.lstrip("-").isdigit():
                exit_code, signal = signal_from_status(int(raw_status))
            found[job_id] = map_slurm_state(state, reason, exit_code, signal, job_id)
        return found

    def parse_scontrol(self, stdout: str, job_id: str) -> JobStatus:
        """Parse ``scontrol -o show job ID`` output."""
        fields = {}
        for key, pattern in _SCONTROL_FIELD_RE.items():
            match = pattern.search(stdout)
            fields[key] = match.group(1) if match else ""
        if fields["JobId"] != job_id or not fields["JobState"]:
            raise PollError(f"slurm: no JobState for job {job_id} in scontrol output {stdout!r}")
        exit_code = signal = None
        if match := _SCONTROL_EXIT_RE.search(stdout):
            exit_code, sig = int(match.group(1)), int(match.group(2))
            signal = sig or None
            if signal is not None and exit_code == 0:
                exit_code = None
        return map_slurm_state(fields["JobState"], fields["Reason"], exit_code, signal, job_id)

    def poll(self, job_ids: Iterable[str]) -> dict[str, JobStatus]:
        """One ``squeue`` for all ids, then ``scontrol show job`` for each id it omits."""
        ids = self._unique_ids(job_ids)
        if not ids:
            return {}
        result = self._run(self.squeue_argv(ids), check=False)
        if result.returncode == 0:
            found = self.parse_squeue(result.stdout)
        elif _INVALID_ID in result.stderr:  # squeue's answer when none of the ids is known
            found = {}
        else:
            raise CommandFailedError(result.argv, result.returncode, result.stdout, result.stderr)
        statuses: dict[str, JobStatus] = {}
        for job_id in ids:
            statuses[job_id] = found.get(job_id) or self._scontrol_status(job_id)
        return statuses

    def _scontrol_status(self, job_id: str) -> JobStatus:
        result = self._run(["scontrol", "--oneliner", "show", "job", job_id], check=False)
        if result.returncode == 0 and result.stdout.strip():
            return self.parse_scontrol(result.stdout, job_id)
        if _INVALID_ID in result.stderr:
            return JobStatus(
                job_id, BatchState.UNKNOWN,
                reason="slurmctld no longer knows this job (purged MinJobAge seconds after it "
                "ended, or never existed)",
            )
        raise CommandFailedError(result.argv, result.returncode, result.stdout, result.stderr)

    # ------------------------------------------------------------ partitions
    def list_partitions(self) -> list[PartitionInfo]:
        """Partitions from one ``sinfo`` call (largest node of each partition)."""
        result = self._run(["sinfo", "--noheader", "--format=%R|%c|%m|%l|%D"])
        merged: dict[str, PartitionInfo] = {}
        for line in result.stdout.splitlines():
            if not line.strip():
                continue
            parts = line.strip().split("|")
            if len(parts) != 5:
                raise PollError(f"slurm: cannot parse sinfo line {line!r}")
            name, cpus, mem, limit, nodes = parts
            info = PartitionInfo(
                name=name,
                cpus_per_node=_leading_int(cpus),
                memory_per_node=_leading_int(mem),
                max_walltime=parse_slurm_time(limit),
                nodes=_leading_int(nodes),
            )
            if name in merged:
                old = merged[name]
                info = PartitionInfo(
                    name,
                    _max_or_none(old.cpus_per_node, info.cpus_per_node),
                    _max_or_none(old.memory_per_node, info.memory_per_node),
                    old.max_walltime,
                    (old.nodes or 0) + (info.nodes or 0),
                )
            merged[name] = info
        return list(merged.values())


def _leading_int(text: str) -> int | None:
    match = re.match(r"\d+", text.strip())
    return int(match.group()) if match else None


def _max_or_none(a: int | None, b: int | None) -> int | None:
    values = [v for v in (a, b) if v is not None]
    return max(values) if values else None
