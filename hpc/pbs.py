"""PBS adapters: PBS Professional / OpenPBS and Torque.

The two share ``qsub`` / ``qdel`` and the ``#PBS`` prefix but differ in resource
syntax and in status output:

* PBS Pro: ``-l select=N:ncpus=..:mpiprocs=..``; poll with
  ``qstat -f -F json -x IDS`` (``-x`` includes finished jobs when the server keeps
  job history; without history a finished job is ``UNKNOWN``). Final state ``F``;
  ``Exit_status`` negative for PBS's own codes (``-29`` walltime, ``-27`` memory),
  128+N / 256+N for a signal; ``substate`` 91 marks a deleted job.
* Torque: ``-l nodes=N:ppn=..``; poll with ``qstat -f -x IDS``, where ``-x`` means
  XML output; completed jobs (``C``) stay visible ``keep_completed`` seconds.
  ``exit_status`` ``-11`` walltime, ``-10`` memory, 256+N for a signal.

A job killed by a signal is reported ``TIMEOUT`` when its used walltime reached
the requested one, since older versions report a walltime kill only as a signal;
otherwise ``CANCELLED`` when PBS Pro marks it deleted (substate 91), else
``FAILED`` with the signal (Torque cannot tell a ``qdel`` from another kill).
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from matdx.hpc.errors import CommandFailedError, PollError, UnsupportedResourceError
from matdx.hpc.resources import Resources, format_hms
from matdx.hpc.scheduler import PartitionInfo, Scheduler
from matdx.hpc.status import BatchState, JobStatus

_B = BatchState

#: PBS Pro negative Exit_status values (JOB_EXEC_* in OpenPBS ``job.h``).
PBSPRO_EXIT_CODES: dict[int, tuple[BatchState, str]] = {
    -1: (_B.FAILED, "JOB_EXEC_FAIL1: execution failed before files, no retry"),
    -2: (_B.FAILED, "JOB_EXEC_FAIL2: execution failed after files, no retry"),
    -3: (_B.FAILED, "JOB_EXEC_RETRY: execution failed, retry"),
    -4: (_B.NODE_FAIL, "JOB_EXEC_INITABT: job aborted on MoM initialization"),
    -5: (_B.NODE_FAIL, "JOB_EXEC_INITRST: job aborted on MoM initialization, checkpoint"),
    -6: (_B.NODE_FAIL, "JOB_EXEC_INITRMG: job aborted on MoM initialization, migrate"),
    -7: (_B.FAILED, "JOB_EXEC_BADRESRT: job restart failed"),
    -10: (_B.FAILED, "JOB_EXEC_FAILUID: invalid uid/gid for job"),
    -11: (_B.FAILED, "JOB_EXEC_RERUN: job rerun"),
    -12: (_B.FAILED, "JOB_EXEC_CHKP: job checkpointed and killed"),
    -13: (_B.FAILED, "JOB_EXEC_FAIL_PASSWORD: bad password"),
    -14: (_B.NODE_FAIL, "JOB_EXEC_RERUN_ON_SIS_FAIL: lost contact with a sister MoM"),
    -15: (_B.FAILED, "JOB_EXEC_QUERST: requeued for restart from checkpoint"),
    -16: (_B.FAILED, "JOB_EXEC_FAILHOOK_RERUN: rejected by a hook, requeued"),
    -17: (_B.FAILED, "JOB_EXEC_FAILHOOK_DELETE: rejected by a hook, deleted"),
    -18: (_B.FAILED, "JOB_EXEC_HOOK_RERUN: a hook requested a rerun"),
    -19: (_B.CANCELLED, "JOB_EXEC_HOOK_DELETE: a hook requested deletion"),
    -20: (_B.NODE_FAIL, "JOB_EXEC_RERUN_MS_FAIL: lost contact with the primary execution host"),
    -21: (_B.FAILED, "JOB_EXEC_FAIL_SECURITY: security breach in PBS directory"),
    -22: (_B.FAILED, "JOB_EXEC_HOOKERROR: hook error or hook timeout"),
    -23: (_B.FAILED, "JOB_EXEC_FAIL_KRB5: no Kerberos credentials"),
    -24: (_B.FAILED, "JOB_EXEC_KILL_NCPUS_BURST: exceeded ncpus (burst)"),
    -25: (_B.FAILED, "JOB_EXEC_KILL_NCPUS_SUM: exceeded ncpus (sum)"),
    -26: (_B.OUT_OF_MEMORY, "JOB_EXEC_KILL_VMEM: exceeded vmem"),
    -27: (_B.OUT_OF_MEMORY, "JOB_EXEC_KILL_MEM: exceeded mem"),
    -28: (_B.TIMEOUT, "JOB_EXEC_KILL_CPUT: exceeded cput"),
    -29: (_B.TIMEOUT, "JOB_EXEC_KILL_WALLTIME: exceeded walltime"),
    -30: (_B.NODE_FAIL, "JOB_EXEC_JOINJOB: join job error"),
}

#: Torque negative exit_status values (Torque admin guide, "Job exit status").
TORQUE_EXIT_CODES: dict[int, tuple[BatchState, str]] = {
    -1: (_B.FAILED, "JOB_EXEC_FAIL1: execution failed before files, no retry"),
    -2: (_B.FAILED, "JOB_EXEC_FAIL2: execution failed after files, no retry"),
    -3: (_B.FAILED, "JOB_EXEC_RETRY: execution failed, retry"),
    -4: (_B.NODE_FAIL, "JOB_EXEC_INITABT: job aborted on MoM initialization"),
    -5: (_B.NODE_FAIL, "JOB_EXEC_INITRST: job aborted on MoM initialization, checkpoint"),
    -6: (_B.NODE_FAIL, "JOB_EXEC_INITRMG: job aborted on MoM initialization, migrate"),
    -7: (_B.FAILED, "JOB_EXEC_BADRESRT: job restart failed"),
    -8: (_B.FAILED, "JOB_EXEC_CMDFAIL: exec() of user command failed"),
    -9: (_B.FAILED, "JOB_EXEC_STDOUTFAIL: could not create stdout/stderr"),
    -10: (_B.OUT_OF_MEMORY, "JOB_EXEC_OVERLIMIT_MEM: exceeded a memory limit"),
    -11: (_B.TIMEOUT, "JOB_EXEC_OVERLIMIT_WT: exceeded a walltime limit"),
    -12: (_B.TIMEOUT, "JOB_EXEC_OVERLIMIT_CPUT: exceeded a CPU time limit"),
    -13: (_B.FAILED, "JOB_EXEC_RETRY_CGROUP: cgroup setup failed, retry"),
    -14: (_B.FAILED, "JOB_EXEC_RETRY_PROLOGUE: prologue failed, retry"),
}

_PBS_ACTIVE: dict[str, tuple[BatchState, str]] = {
    "Q": (_B.QUEUED, ""),
    "H": (_B.QUEUED, "held"),
    "W": (_B.QUEUED, "waiting for its execution time"),
    "T": (_B.QUEUED, "in transit"),
    "R": (_B.RUNNING, ""),
    "E": (_B.RUNNING, "exiting"),
    "B": (_B.RUNNING, "array job begun"),
    "S": (_B.RUNNING, "suspended"),
    "U": (_B.RUNNING, "suspended (workstation busy)"),
}
_PBSPRO_SUBSTATE_TERMINATED = 91
#: qstat stderr lines that only say an id is not (or no longer) known.
_QSTAT_GONE_RE = re.compile(r"Unknown Job Id|has finished|job_history_enable")
#: qdel output lines that only say a job is already gone.
_QDEL_GONE_RE = re.compile(r"Unknown Job Id|has finished|Request invalid for state of job")
_ID_RE = re.compile(r"\d+(?:\[\d*\])?(?:\.[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*)?")
_HMS_RE = re.compile(r"(\d+):(\d{2}):(\d{2})")
_JSON_ESCAPE_RE = re.compile(r'\\(?:["\\/bfnrt]|u[0-9A-Fa-f]{4})?')


def _seconds(text: Any) -> int | None:
    """``HH:MM:SS`` (or plain seconds) → seconds; None when absent or unreadable."""
    if isinstance(text, int):
        return text
    if not isinstance(text, str):
        return None
    if match := _HMS_RE.fullmatch(text.strip()):
        h, m, s = (int(g) for g in match.groups())
        return (h * 60 + m) * 60 + s
    return int(text) if text.strip().isdigit() else None


def _to_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    return None


def classify_pbs_exit(
    exit_status: int | None,
    codes: Mapping[int, tuple[BatchState, str]],
    *,
    deleted: bool = False,
    used_walltime: int | None = None,
    requested_walltime: int | None = None,
    job_id: str = "",
    native_state: str = "",
) -> JobStatus:
    """Final state of a finished PBS job from its exit status.

    Parameters
    ----------
    exit_status : int or None
        ``Exit_status`` / ``exit_status``; None when the job never ran.
    codes : mapping
        The flavour's table of negative codes (:data:`PBSPRO_EXIT_CODES`,
        :data:`TORQUE_EXIT_CODES`).
    deleted : bool
        The server marks the job as deleted (PBS Pro ``substate`` 91).
    used_walltime, requested_walltime : int, optional
        ``resources_used.walltime`` and ``Resource_List.walltime``, s.
    job_id, native_state : str
        Copied into the result.

    Returns
    -------
    JobStatus
    """
    def status(state: BatchState, reason: str, code: int | None = None,
               sig: int | None = None) -> JobStatus:
        return JobStatus(job_id, state, code, sig, reason, native_state)

    if exit_status is None:
        if deleted:
            return status(_B.CANCELLED, "deleted before it ran")
        return status(_B.UNKNOWN, "finished without an exit status")
    if exit_status < 0:
        state, reason = codes.get(exit_status, (_B.FAILED, f"scheduler exit code {exit_status}"))
        return status(state, reason, exit_status)
    if exit_status == 0:
        return status(_B.COMPLETED, "", 0)
    if exit_status < 128:
        if deleted:
            return status(_B.CANCELLED, "deleted while running", exit_status)
        return status(_B.FAILED, "non-zero exit code", exit_status)
    if exit_status == 254:
        return status(_B.FAILED, "execve() of the job script failed", exit_status)
    sig = exit_status - 256 if exit_status > 256 else exit_status - 128
    if (used_walltime is not None and requested_walltime is not None
            and used_walltime >= requested_walltime):
        return status(_B.TIMEOUT, f"killed by signal {sig} after reaching its walltime",
                      None, sig)
    if deleted:
        return status(_B.CANCELLED, f"deleted (killed by signal {sig})", None, sig)
    return status(_B.FAILED, f"killed by signal {sig}", None, sig)


def _match_ids(requested: list[str], reported: Mapping[str, JobStatus]) -> dict[str, JobStatus]:
    """Match requested ids to reported ones, exactly or by sequence number.

    ``qsub`` may print ``123.srv`` while ``qstat`` reports ``123.srv.example.org``.
    """
    by_number: dict[str, JobStatus] = {}
    for key, value in reported.items():
        by_number.setdefault(key.split(".", 1)[0], value)
    out = {}
    for job_id in requested:
        found = reported.get(job_id) or by_number.get(job_id.split(".", 1)[0])
        if found is None:
            found = JobStatus(
                job_id, _B.UNKNOWN,
                reason="the server no longer reports this job (history disabled or expired, "
                "or never existed)",
            )
        elif found.job_id != job_id:
            found = JobStatus(job_id, found.state, found.exit_code, found.signal,
                              found.reason, found.native_state)
        out[job_id] = found
    return out


def loads_pbs_json(text: str) -> dict[str, Any]:
    """Parse ``qstat -F json`` output, tolerating its known invalid escapes.

    Some PBS Pro versions print raw control characters and unescaped
    backslashes (from ``Variable_List``) inside strings.
    """
    try:
        return json.loads(text, strict=False)
    except json.JSONDecodeError:
        # Keep valid escapes (consumed whole), double every lone backslash.
        fixed = _JSON_ESCAPE_RE.sub(lambda m: m.group() if len(m.group()) > 1 else "\\\\", text)
        try:
            return json.loads(fixed, strict=False)
        except json.JSONDecodeError as err:
            raise PollError(f"pbs: cannot parse qstat JSON output: {err}") from err


class _PBSBase(Scheduler):
    directive: ClassVar[str] = "#PBS"
    programs: ClassVar[tuple[str, ...]] = ("qsub", "qstat", "qdel")
    submit_command: ClassVar[tuple[str, ...]] = ("qsub",)
    cancel_command: ClassVar[tuple[str, ...]] = ("qdel",)
    job_id_re: ClassVar[re.Pattern[str]] = _ID_RE
    _cancel_gone_re = _QDEL_GONE_RE

    def parse_job_id(self, stdout: str) -> str:
        """``qsub`` prints the id, e.g. ``1234.pbs01``."""
        for line in stdout.splitlines():
            if self.job_id_re.fullmatch(line.strip()):
                return line.strip()
        raise self._submit_error(stdout, "")

    def _common_lines(self, r: Resources) -> list[str]:
        d = self._directive
        lines = [d("-N", r.job_name), d("-l", f"walltime={format_hms(r.walltime)}")]
        if r.partition:
            lines.append(d("-q", r.partition))
        if r.account:
            lines.append(d("-A", r.account))
        if r.output:
            lines.append(d("-o", r.output))
        if r.error:
            lines.append(d("-e", r.error))
        return lines

    def find_argv(self, name: str) -> list[str]:
        return ["qselect", "-N", name]

    def _qstat(self, argv: list[str]) -> str:
        """Run a qstat that may name unknown ids: those only print to stderr."""
        result = self._run(argv, check=False)
        if result.returncode != 0:
            other = [ln for ln in result.stderr.splitlines()
                     if ln.strip() and not _QSTAT_GONE_RE.search(ln)]
            if other or not (result.stderr.strip() or result.stdout.strip()):
                raise CommandFailedError(
                    result.argv, result.returncode, result.stdout, result.stderr
                )
        return result.stdout


class PBSProScheduler(_PBSBase):
    """PBS Professional / OpenPBS (``select`` syntax, ``qstat -F json``)."""

    name: ClassVar[str] = "pbspro"

    def header_lines(self, resources: Resources) -> list[str]:
        """``#PBS`` lines; one ``select`` chunk per node, memory per chunk."""
        r = resources
        if r.qos:
            raise UnsupportedResourceError(
                f"qos: PBS Professional has no QOS (got {r.qos!r}); use a queue instead"
            )
        chunk = (f"select={r.nodes}:ncpus={r.cores_per_node}:mpiprocs={r.ranks_per_node}"
                 f":ompthreads={r.threads_per_rank}")
        if r.memory is not None:
            chunk += f":mem={r.memory}mb"
        if r.gpus_per_node:
            chunk += f":ngpus={r.gpus_per_node}"
        place = "place=scatter:excl" if r.exclusive else "place=scatter"
        lines = self._common_lines(r)
        lines[1:1] = [self._directive("-l", chunk), self._directive("-l", place)]
        return lines

    def qstat_argv(self, job_ids: list[str]) -> list[str]:
        """The one ``qstat`` command that reports all ``job_ids``, finished ones included."""
        return ["qstat", "-f", "-F", "json", "-x", *job_ids]

    def parse_qstat(self, stdout: str) -> dict[str, JobStatus]:
        """Parse ``qstat -f -F json`` output into statuses keyed by the reported ids."""
        if not stdout.strip():
            return {}
        data = loads_pbs_json(stdout)
        jobs = data.get("Jobs") or {}
        if not isinstance(jobs, dict):
            raise PollError(f"pbspro: 'Jobs' is not an object in qstat output: {jobs!r}")
        return {job_id: self.map_job(job_id, attrs) for job_id, attrs in jobs.items()}

    def map_job(self, job_id: str, attrs: Mapping[str, Any]) -> JobStatus:
        """Map one job's ``qstat -f`` attributes onto a JobStatus."""
        native = str(attrs.get("job_state", ""))
        if native in _PBS_ACTIVE:
            state, reason = _PBS_ACTIVE[native]
            comment = str(attrs.get("comment", ""))
            if state is _B.QUEUED and comment:
                reason = f"{reason}: {comment}" if reason else comment
            return JobStatus(job_id, state, None, None, reason, native)
        if native == "M":
            return JobStatus(job_id, _B.UNKNOWN, reason="moved to another server",
                             native_state=native)
        if native not in ("F", "X"):
            return JobStatus(job_id, _B.UNKNOWN, reason=f"unrecognised PBS state {native!r}",
                             native_state=native)
        used = attrs.get("resources_used") or {}
        requested = attrs.get("Resource_List") or {}
        return classify_pbs_exit(
            _to_int(attrs.get("Exit_status")),
            PBSPRO_EXIT_CODES,
            deleted=_to_int(attrs.get("substate")) == _PBSPRO_SUBSTATE_TERMINATED,
            used_walltime=_seconds(used.get("walltime")),
            requested_walltime=_seconds(requested.get("walltime")),
            job_id=job_id,
            native_state=native,
        )

    def poll(self, job_ids: Iterable[str]) -> dict[str, JobStatus]:
        """One ``qstat -f -F json -x`` for all ids."""
        ids = self._unique_ids(job_ids)
        if not ids:
            return {}
        return _match_ids(ids, self.parse_qstat(self._qstat(self.qstat_argv(ids))))

    def list_partitions(self) -> list[PartitionInfo]:
        """Queues from ``qstat -Q -f -F json``."""
        data = loads_pbs_json(self._run(["qstat", "-Q", "-f", "-F", "json"]).stdout or "{}")
        out = []
        for name, attrs in (data.get("Queue") or {}).items():
            limits = attrs.get("resources_max") or {}
            out.append(PartitionInfo(
                name=name,
                cpus_per_node=None,
                memory_per_node=None,
                max_walltime=_seconds(limits.get("walltime")),
                nodes=_to_int(limits.get("nodect")),
            ))
        return out


class TorqueScheduler(_PBSBase):
    """Torque (``nodes=N:ppn=P`` syntax, ``qstat -f -x`` XML)."""

    name: ClassVar[str] = "torque"

    def header_lines(self, resources: Resources) -> list[str]:
        """``#PBS`` lines; Torque's ``mem`` is the job's total memory."""
        r = resources
        d = self._directive
        nodes = f"nodes={r.nodes}:ppn={r.cores_per_node}"
        if r.gpus_per_node:
            nodes += f":gpus={r.gpus_per_node}"
        lines = self._common_lines(r)
        extra = [d("-l", nodes)]
        if r.memory is not None:
            extra.append(d("-l", f"mem={r.memory * r.nodes}mb"))
        if r.qos:
            extra.append(d("-l", f"qos={r.qos}"))
        if r.exclusive:
            extra.append(d("-n"))
        lines[1:1] = extra
        if r.working_directory:
            lines.append(d("-d", r.working_directory))
        return lines

    def qstat_argv(self, job_ids: list[str]) -> list[str]:
        """The one ``qstat`` command (XML full status) for all ``job_ids``."""
        return ["qstat", "-f", "-x", *job_ids]

    def parse_qstat(self, stdout: str) -> dict[str, JobStatus]:
        """Parse ``qstat -f -x`` XML (empty output: no jobs, as Torque < 6.1 prints)."""
        if not stdout.strip():
            return {}
        try:
            root = ET.fromstring(stdout.strip())
        except ET.ParseError as err:
            raise PollError(f"torque: cannot parse qstat XML output: {err}") from err
        found = {}
        for job in root.iter("Job"):
            job_id = (job.findtext("Job_Id") or "").strip()
            if job_id:
                found[job_id] = self.map_job(job_id, job)
        return found

    def map_job(self, job_id: str, job: ET.Element) -> JobStatus:
        """Map one ``<Job>`` element onto a JobStatus."""
        native = (job.findtext("job_state") or "").strip()
        if native in _PBS_ACTIVE:
            state, reason = _PBS_ACTIVE[native]
            return JobStatus(job_id, state, None, None, reason, native)
        if native != "C":
            return JobStatus(job_id, _B.UNKNOWN, reason=f"unrecognised Torque state {native!r}",
                             native_state=native)
        return classify_pbs_exit(
            _to_int(job.findtext("exit_status")),
            TORQUE_EXIT_CODES,
            used_walltime=_seconds(job.findtext("resources_used/walltime")),
            requested_walltime=_seconds(job.findtext("Resource_List/walltime")),
            job_id=job_id,
            native_state=native,
        )

    def poll(self, job_ids: Iterable[str]) -> dict[str, JobStatus]:
        """One ``qstat -f -x`` for all ids; completed jobs are seen ``keep_completed`` s."""
        ids = self._unique_ids(job_ids)
        if not ids:
            return {}
        return _match_ids(ids, self.parse_qstat(self._qstat(self.qstat_argv(ids))))

    def list_partitions(self) -> list[PartitionInfo]:
        """Queues from ``qstat -Q -f`` (``Queue: NAME`` blocks of ``key = value``)."""
        stdout = self._run(["qstat", "-Q", "-f"]).stdout
        out: list[PartitionInfo] = []
        name: str | None = None
        walltime: int | None = None
        for line in [*stdout.splitlines(), "Queue: "]:
            if line.startswith("Queue:"):
                if name:
                    out.append(PartitionInfo(name=name, max_walltime=walltime))
                name, walltime = line.split(":", 1)[1].strip(), None
            elif "=" in line:
                key, value = (part.strip() for part in line.split("=", 1))
                if key == "resources_max.walltime":
                    walltime = _seconds(value)
        return out
