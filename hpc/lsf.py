"""IBM Spectrum LSF adapter: ``bsub < script``, ``bjobs -o ... -json``, ``bkill``.

``bsub`` reads ``#BSUB`` directives only from a script fed on stdin, so the
script text is passed as the command's input (no shell redirection). Polling
runs one ``bjobs -a -json`` for every id; ids LSF has cleaned (``CLEAN_PERIOD``
after they ended) come back as records with an ``ERROR`` key and are reported
``UNKNOWN``. Why a job in ``EXIT`` ended is read from the ``TERM_*`` keyword (or
its description) in ``EXIT_REASON``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from matdx.hpc.errors import CommandFailedError, PollError, UnsupportedResourceError
from matdx.hpc.resources import Resources
from matdx.hpc.scheduler import PartitionInfo, Scheduler
from matdx.hpc.status import BatchState, JobStatus

_B = BatchState

#: ``bjobs`` STAT values of unfinished jobs → common state and reason.
LSF_ACTIVE_STATES: dict[str, tuple[BatchState, str]] = {
    "PEND": (_B.QUEUED, ""),
    "PSUSP": (_B.QUEUED, "suspended while pending (held)"),
    "WAIT": (_B.QUEUED, "chunk job member waiting"),
    "PROV": (_B.QUEUED, "waiting for its host to be provisioned"),
    "RUN": (_B.RUNNING, ""),
    "USUSP": (_B.RUNNING, "suspended by the user"),
    "SSUSP": (_B.RUNNING, "suspended by LSF"),
}

#: LSF termination keywords (``TERM_*``) → common state.
LSF_TERM_REASONS: dict[str, BatchState] = {
    "TERM_RUNLIMIT": _B.TIMEOUT,
    "TERM_DEADLINE": _B.TIMEOUT,
    "TERM_CPULIMIT": _B.TIMEOUT,
    "TERM_MEMLIMIT": _B.OUT_OF_MEMORY,
    "TERM_SWAP": _B.OUT_OF_MEMORY,
    "TERM_OWNER": _B.CANCELLED,
    "TERM_ADMIN": _B.CANCELLED,
    "TERM_FORCE_OWNER": _B.CANCELLED,
    "TERM_FORCE_ADMIN": _B.CANCELLED,
    "TERM_BUCKET_KILL": _B.CANCELLED,
    "TERM_REQUEUE_OWNER": _B.CANCELLED,
    "TERM_REQUEUE_ADMIN": _B.CANCELLED,
    "TERM_PREEMPT": _B.CANCELLED,
    "TERM_WINDOW": _B.CANCELLED,
    "TERM_MC_RECALL": _B.CANCELLED,
    "TERM_ZOMBIE": _B.NODE_FAIL,
    "TERM_LOAD": _B.NODE_FAIL,
    "TERM_REMOVE_HUNG_JOB": _B.NODE_FAIL,
    "TERM_ORPHAN_SYSTEM": _B.NODE_FAIL,
}

# bjobs may print only the description of a TERM_* keyword.
_TERM_PHRASES: tuple[tuple[re.Pattern[str], BatchState], ...] = (
    (re.compile(r"run ?time limit|run limit|deadline", re.I), _B.TIMEOUT),
    (re.compile(r"cpu (usage|time) limit", re.I), _B.TIMEOUT),
    (re.compile(r"memory (usage )?limit|swap", re.I), _B.OUT_OF_MEMORY),
    (re.compile(r"killed by (the )?owner|killed by root|LSF administrator", re.I),
     _B.CANCELLED),
)
_TERM_RE = re.compile(r"\bTERM_[A-Z_]+\b")
_BJOBS_FIELDS = "jobid stat exit_code exit_reason pend_reason"


def map_lsf_record(record: Mapping[str, Any]) -> JobStatus:
    """Map one ``bjobs -json`` record onto a JobStatus.

    Parameters
    ----------
    record : mapping
        Keys ``JOBID``, ``STAT``, ``EXIT_CODE``, ``EXIT_REASON``, ``PEND_REASON``
        (string values, possibly empty), or ``JOBID`` and ``ERROR``.
    """
    job_id = str(record.get("JOBID", "")).strip()
    if record.get("ERROR"):
        return JobStatus(job_id, _B.UNKNOWN, reason=str(record["ERROR"]).strip())
    native = str(record.get("STAT", "")).strip()
    code_text = str(record.get("EXIT_CODE", "") or "").strip()
    exit_code = int(code_text) if re.fullmatch(r"-?\d+", code_text) else None
    exit_reason = str(record.get("EXIT_REASON", "") or "").strip()
    if native in LSF_ACTIVE_STATES:
        state, reason = LSF_ACTIVE_STATES[native]
        pend = str(record.get("PEND_REASON", "") or "").strip()
        if state is _B.QUEUED and pend:
            reason = f"{reason}: {pend}" if reason else pend
        return JobStatus(job_id, state, None, None, reason, native)
    if native == "DONE":
        return JobStatus(job_id, _B.COMPLETED, 0, None, exit_reason, native)
    if native == "EXIT":
        return JobStatus(job_id, _classify_exit(exit_reason), exit_code, None,
                         exit_reason or "non-zero exit code", native)
    if native == "UNKWN":
        return JobStatus(job_id, _B.UNKNOWN, None, None,
                         "LSF lost contact with the execution host", native)
    if native == "ZOMBI":
        return JobStatus(job_id, _B.NODE_FAIL, exit_code, None,
                         "killed while its execution host was unreachable", native)
    return JobStatus(job_id, _B.UNKNOWN, None, None, f"unrecognised LSF state {native!r}", native)


def _classify_exit(reason: str) -> BatchState:
    for keyword in _TERM_RE.findall(reason):
        if keyword in LSF_TERM_REASONS:
            return LSF_TERM_REASONS[keyword]
    for pattern, state in _TERM_PHRASES:
        if pattern.search(reason):
            return state
    return _B.FAILED


class LSFScheduler(Scheduler):
    """IBM Spectrum LSF.

    Slots: ``-n`` is ranks × threads over all nodes with ``span[ptile=...]`` per
    node, so threaded ranks get their cores; the MPI launcher passes the rank
    count explicitly. Memory is a per-host reservation (``rusage[mem=]``, per host
    by default since LSF 10.1) and a ``-M`` limit.
    """

    name: ClassVar[str] = "lsf"
    directive: ClassVar[str] = "#BSUB"
    programs: ClassVar[tuple[str, ...]] = ("bsub", "bjobs", "bkill", "bqueues")
    submit_command: ClassVar[tuple[str, ...]] = ("bsub",)
    cancel_command: ClassVar[tuple[str, ...]] = ("bkill",)
    job_id_re: ClassVar[re.Pattern[str]] = re.compile(r"\d{1,19}")
    _submit_re: ClassVar[re.Pattern[str]] = re.compile(r"Job <(\d+)> is submitted")
    _cancel_gone_re = re.compile(
        r"already finished|No matching job found|is not found|Job has already been killed",
        re.I,
    )

    def header_lines(self, resources: Resources) -> list[str]:
        """``#BSUB`` lines; ``-W`` in whole minutes, rounded up."""
        r = resources
        if r.qos:
            raise UnsupportedResourceError(
                f"qos: LSF has no QOS (got {r.qos!r}); use a queue or an SLA instead"
            )
        d = self._directive
        minutes = math.ceil(r.walltime / 60)
        lines = [
            d("-J", r.job_name),
            d("-n", str(r.total_cores)),
            d("-R", f"span[ptile={r.cores_per_node}]"),
            d("-W", f"{minutes // 60}:{minutes % 60:02d}"),
        ]
        if r.memory is not None:
            lines.append(d("-R", f"rusage[mem={r.memory}MB]"))
            lines.append(d("-M", f"{r.memory}MB"))
        if r.partition:
            lines.append(d("-q", r.partition))
        if r.account:
            lines.append(d("-P", r.account))
        if r.gpus_per_node:
            lines.append(d("-gpu", f"num={r.gpus_per_node}"))
        if r.exclusive:
            lines.append(d("-x"))
        if r.output:
            lines.append(d("-o", r.output))
        if r.error:
            lines.append(d("-e", r.error))
        if r.working_directory:
            lines.append(d("-cwd", r.working_directory))
        return lines

    def submit_argv(self, script: Path) -> tuple[list[str], str | None]:
        """``bsub`` with the script on stdin (the equivalent of ``bsub < script``)."""
        return [*self.submit_command], script.read_text()

    def parse_job_id(self, stdout: str) -> str:
        """``bsub`` prints ``Job <ID> is submitted to queue <Q>.``."""
        match = self._submit_re.search(stdout)
        if not match:
            raise self._submit_error(stdout, "")
        return match.group(1)

    _find_none_re = re.compile(r"No unfinished job found")

    def find_argv(self, name: str) -> list[str]:
        return ["bjobs", "-noheader", "-o", "jobid", "-J", name]

    def bjobs_argv(self, job_ids: list[str]) -> list[str]:
        """The one ``bjobs`` command that reports all ``job_ids``, finished ones included."""
        return ["bjobs", "-a", "-json", "-o", _BJOBS_FIELDS, *job_ids]

    def parse_bjobs(self, stdout: str) -> dict[str, JobStatus]:
        """Parse ``bjobs -o ... -json`` output."""
        try:
            data = json.loads(stdout, strict=False)
        except json.JSONDecodeError as err:
            raise PollError(f"lsf: cannot parse bjobs JSON output: {err}") from err
        records = data.get("RECORDS") if isinstance(data, dict) else None
        if not isinstance(records, list):
            raise PollError(f"lsf: no RECORDS list in bjobs output {stdout[:200]!r}")
        return {s.job_id: s for s in (map_lsf_record(rec) for rec in records) if s.job_id}

    def poll(self, job_ids: Iterable[str]) -> dict[str, JobStatus]:
        """One ``bjobs -a -json`` for all ids."""
        ids = self._unique_ids(job_ids)
        if not ids:
            return {}
        result = self._run(self.bjobs_argv(ids), check=False)
        if not result.stdout.strip().startswith("{"):
            raise CommandFailedError(result.argv, result.returncode, result.stdout, result.stderr)
        found = self.parse_bjobs(result.stdout)
        return {
            job_id: found.get(job_id)
            or JobStatus(job_id, _B.UNKNOWN, reason="not reported by bjobs")
            for job_id in ids
        }

    def list_partitions(self) -> list[PartitionInfo]:
        """Queue names from ``bqueues -w``."""
        stdout = self._run(["bqueues", "-w"]).stdout
        names = []
        for line in stdout.splitlines():
            words = line.split()
            if words and words[0] != "QUEUE_NAME":
                names.append(words[0])
        return [PartitionInfo(name=n) for n in names]
