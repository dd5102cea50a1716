"""Grid Engine (SGE, Son of GE, Univa) adapter: ``qsub -terse``, ``qstat -xml``, ``qacct``.

``qstat`` lists only pending and running jobs, so polling runs one
``qstat -xml`` for all ids and then ``qacct -j ID`` for each id that has left it
(once per finished job). The accounting file has no single "why" field: the
``failed`` code, the exit status, the limits in ``category`` and the used
``ru_wallclock`` / ``maxvmem`` are combined to tell a walltime kill (``TIMEOUT``)
or a memory kill (``OUT_OF_MEMORY``) from a ``qdel`` (``CANCELLED``). A job that
left ``qstat`` but has no accounting record yet (or was deleted before it ran)
is ``UNKNOWN``.

Multi-slot jobs need a parallel environment (``-pe NAME SLOTS``), whose name is
site-specific: pass ``parallel_environment`` (site profile
``scheduler_options``). Its allocation rule, not this adapter, decides how slots
spread over nodes.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from typing import Any, ClassVar

from matdx.hpc.errors import CommandFailedError, PollError, ResourceError, UnsupportedResourceError
from matdx.hpc.resources import Resources, check_identifier, format_hms
from matdx.hpc.scheduler import PartitionInfo, Scheduler
from matdx.hpc.status import BatchState, JobStatus

_B = BatchState
_QMASTER_ENFORCED_LIMIT = 37
_FAILED_AFTER_JOB = 100
_SGE_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)B?\s*")
_SGE_SIZE_FACTOR = {"": 1.0, "k": 1e3, "K": 1024.0, "m": 1e6, "M": 1024.0**2, "g": 1e9,
                    "G": 1024.0**3, "t": 1e12, "T": 1024.0**4}


def parse_sge_size(text: str) -> float | None:
    """Parse an SGE memory size into bytes (``k m g`` ×1000, ``K M G`` ×1024, ``B`` optional).

    Examples
    --------
    >>> parse_sge_size("2G"), parse_sge_size("1.5M")
    (2147483648.0, 1572864.0)
    """
    match = _SGE_SIZE_RE.fullmatch(text or "")
    if not match:
        return None
    return float(match.group(1)) * _SGE_SIZE_FACTOR[match.group(2)]


def parse_sge_time(text: str) -> float | None:
    """Parse an SGE time (``HH:MM:SS``, ``SECONDS``, ``60s``, ``12.5``) into seconds."""
    text = (text or "").strip().removesuffix("s")
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    if match := re.fullmatch(r"(\d+):(\d+):(\d+)", text):
        h, m, s = (int(g) for g in match.groups())
        return float((h * 60 + m) * 60 + s)
    return None


def parse_qacct(stdout: str) -> dict[str, str]:
    """Fields of the last record in ``qacct -j ID`` output (``key value`` lines)."""
    records: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in stdout.splitlines():
        if line.startswith("====="):
            if current:
                records.append(current)
            current = {}
            continue
        parts = line.split(None, 1)
        if parts:
            current[parts[0]] = parts[1].strip() if len(parts) > 1 else ""
    if current:
        records.append(current)
    if not records:
        raise PollError(f"sge: no accounting record in qacct output {stdout[:200]!r}")
    return records[-1]


def _category_limits(category: str) -> dict[str, str]:
    """``-l h_rt=60,h_vmem=1G`` parts of a qacct ``category`` field."""
    limits: dict[str, str] = {}
    for match in re.finditer(r"-l\s+(\S+)", category or ""):
        for item in match.group(1).split(","):
            key, _, value = item.partition("=")
            limits[key.strip()] = value.strip()
    return limits


def _leading_int(text: str) -> int | None:
    match = re.match(r"\s*(-?\d+)", text or "")
    return int(match.group(1)) if match else None


def map_qacct(job_id: str, fields: dict[str, str]) -> JobStatus:
    """Final state of an SGE job from its accounting record.

    Parameters
    ----------
    job_id : str
        The job id.
    fields : dict
        :func:`parse_qacct` output (``failed``, ``exit_status``, ``category``,
        ``ru_wallclock``, ``maxvmem``, ``slots``, optionally ``deleted_by``).
    """
    failed = _leading_int(fields.get("failed", "0")) or 0
    failed_text = fields.get("failed", "").partition(":")[2].strip()
    exit_status = _leading_int(fields.get("exit_status", ""))
    native = f"failed={failed} exit_status={exit_status}"

    def status(state: BatchState, reason: str) -> JobStatus:
        code, sig = exit_status, None
        if exit_status is not None and exit_status > 128:
            code, sig = None, exit_status - 128
        return JobStatus(job_id, state, code, sig, reason, native)

    if failed == 0 and exit_status == 0:
        return status(_B.COMPLETED, "")
    limits = _category_limits(fields.get("category", ""))
    wallclock = parse_sge_time(fields.get("ru_wallclock", ""))
    h_rt = parse_sge_time(limits.get("h_rt", ""))
    maxvmem = parse_sge_size(fields.get("maxvmem", ""))
    h_vmem = parse_sge_size(limits.get("h_vmem", ""))
    slots = _leading_int(fields.get("slots", "1")) or 1
    hit_time = wallclock is not None and h_rt is not None and wallclock >= h_rt
    hit_memory = maxvmem is not None and h_vmem is not None and maxvmem >= 0.98 * h_vmem * slots
    killed = exit_status is not None and exit_status > 128
    if failed in (_QMASTER_ENFORCED_LIMIT, _FAILED_AFTER_JOB) or killed:
        if hit_memory:
            return status(_B.OUT_OF_MEMORY, f"exceeded h_vmem={limits['h_vmem']}")
        if hit_time:
            return status(_B.TIMEOUT, f"exceeded h_rt={limits['h_rt']}")
        if failed == _QMASTER_ENFORCED_LIMIT:
            return status(_B.TIMEOUT, failed_text or "qmaster enforced a limit")
    deleted_by = fields.get("deleted_by", "NONE")
    if deleted_by not in ("", "NONE"):
        return status(_B.CANCELLED, f"deleted by {deleted_by}")
    if 0 < failed < _FAILED_AFTER_JOB:
        return status(_B.FAILED, f"failed {failed}: {failed_text}" if failed_text
                      else f"failed {failed}")
    if killed:
        return status(_B.CANCELLED,
                      f"killed by signal {exit_status - 128} (qdel, or a kill from outside)")
    return status(_B.FAILED, "non-zero exit code" if not failed_text
                  else f"failed {failed}: {failed_text}")


def _queue_fields(text: str) -> dict[str, str]:
    """``key value`` lines of a ``qconf -sq`` block; ``\\`` continues a line."""
    fields: dict[str, str] = {}
    key = None
    for raw in text.splitlines():
        line = raw.rstrip()
        if key is not None and fields[key].endswith("\\"):
            fields[key] = fields[key][:-1].rstrip() + " " + line.strip()
            continue
        parts = line.split(None, 1)
        if parts:
            key = parts[0]
            fields[key] = parts[1].strip() if len(parts) > 1 else ""
    return fields


def parse_queue_config(text: str) -> PartitionInfo:
    """A cluster queue from its ``qconf -sq NAME`` configuration.

    ``slots`` may hold per-host overrides (``1,[node01=16],[@big=64]``): the largest
    value is the queue's slots per node. ``hostlist`` counts as nodes only when it
    names hosts, not host groups (``@allhosts``). ``h_rt`` ``INFINITY`` is no limit.

    Examples
    --------
    >>> q = parse_queue_config("qname all.q\\nhostlist vm\\nslots 1,[vm=8]\\nh_rt 48:00:00")
    >>> q.name, q.cpus_per_node, q.nodes, q.max_walltime
    ('all.q', 8, 1, 172800)
    """
    fields = _queue_fields(text)
    name = fields.get("qname", "").strip()
    if not name:
        raise PollError(f"sge: no qname in queue configuration {text[:200]!r}")
    slots = [int(n) for n in re.findall(r"(?:^|[,=])\s*(\d+)", fields.get("slots", ""))]
    hosts = fields.get("hostlist", "NONE").replace(",", " ").split()
    nodes = None if any(h.startswith("@") for h in hosts) else len(
        [h for h in hosts if h != "NONE"])
    h_rt = fields.get("h_rt", "INFINITY")
    walltime = None if h_rt.upper() == "INFINITY" else parse_sge_time(h_rt)
    return PartitionInfo(
        name=name,
        cpus_per_node=max(slots) if slots else None,
        max_walltime=None if walltime is None else int(walltime),
        nodes=nodes,
    )


def map_qstat_state(job_id: str, state: str) -> JobStatus:
    """Map a ``qstat`` state string (``qw``, ``hqw``, ``r``, ``Eqw``, ``dr`` ...)."""
    if "E" in state:
        return JobStatus(job_id, _B.FAILED, None, None,
                         "in error state; it stays queued until cleared (qmod -cj) or deleted",
                         state)
    if "d" in state:
        return JobStatus(job_id, _B.CANCELLED, None, None, "being deleted", state)
    if "q" in state or "w" in state:  # qw, hqw, hRwq (held, rescheduled, waiting)
        return JobStatus(job_id, _B.QUEUED, None, None, "held" if "h" in state else "", state)
    if any(c in state for c in "sST"):
        return JobStatus(job_id, _B.RUNNING, None, None, "suspended", state)
    if any(c in state for c in "rtR"):
        return JobStatus(job_id, _B.RUNNING, None, None, "", state)
    return JobStatus(job_id, _B.UNKNOWN, None, None, f"unrecognised SGE state {state!r}", state)


class SGEScheduler(Scheduler):
    """Grid Engine.

    Parameters
    ----------
    parallel_environment : str, optional
        PE used for jobs with more than one slot (``-pe NAME SLOTS``).
    memory_resource : str
        Per-slot memory complex (``h_vmem``; some sites use ``mem_free``).
    gpu_resource : str
        GPU complex (``gpu``).
    exclusive_resource : str
        Boolean complex that requests whole hosts (``exclusive``).
    export_environment : bool
        Pass the submitting environment to the job (``-V``), as ``sbatch`` and
        ``bsub`` do by default; without it Grid Engine starts the job with almost
        none (no ``PATH`` additions, no ``PYTHONPATH``).
    **kwargs
        See :class:`~matdx.hpc.scheduler.Scheduler`.
    """

    name: ClassVar[str] = "sge"
    directive: ClassVar[str] = "#$"
    programs: ClassVar[tuple[str, ...]] = ("qsub", "qstat", "qacct", "qdel", "qconf")
    submit_command: ClassVar[tuple[str, ...]] = ("qsub", "-terse")
    cancel_command: ClassVar[tuple[str, ...]] = ("qdel",)
    job_id_re: ClassVar[re.Pattern[str]] = re.compile(r"\d{1,19}")
    _cancel_gone_re = re.compile(r"does not exist|has already been deleted|already completed")

    def __init__(
        self,
        *,
        parallel_environment: str | None = None,
        memory_resource: str = "h_vmem",
        gpu_resource: str = "gpu",
        exclusive_resource: str = "exclusive",
        export_environment: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(export_environment, bool):
            raise ResourceError(
                f"sge options: export_environment must be true or false, got "
                f"{export_environment!r}"
            )
        self.export_environment = export_environment
        try:
            self.parallel_environment = (
                None if parallel_environment is None
                else check_identifier(parallel_environment, "parallel environment name")
            )
            self.memory_resource = check_identifier(memory_resource, "resource name")
            self.gpu_resource = check_identifier(gpu_resource, "resource name")
            self.exclusive_resource = check_identifier(exclusive_resource, "resource name")
        except ValueError as err:
            raise ResourceError(f"sge options: {err}") from err

    def header_lines(self, resources: Resources) -> list[str]:
        """``#$`` lines; memory is per slot (``h_vmem`` = memory per node / slots per node)."""
        r = resources
        if r.qos:
            raise UnsupportedResourceError(
                f"qos: Grid Engine has no QOS (got {r.qos!r}); use a queue or project instead"
            )
        d = self._directive
        slots = r.total_cores
        lines = [
            d("-N", r.job_name),
            d("-S", self.shell.split()[0]),
            d("-l", f"h_rt={format_hms(r.walltime)}"),
        ]
        if self.export_environment:
            lines.append(d("-V"))
        if slots > 1:
            if self.parallel_environment is None:
                raise UnsupportedResourceError(
                    f"parallel_environment: a job with {slots} slots needs a Grid Engine "
                    "parallel environment; set scheduler_options.parallel_environment in the "
                    "site profile"
                )
            lines.append(d("-pe", self.parallel_environment, str(slots)))
        if r.memory is not None:
            per_slot = math.ceil(r.memory / r.cores_per_node)
            lines.append(d("-l", f"{self.memory_resource}={per_slot}M"))
        if r.gpus_per_node:
            lines.append(d("-l", f"{self.gpu_resource}={r.gpus_per_node}"))
        if r.exclusive:
            lines.append(d("-l", f"{self.exclusive_resource}=true"))
        if r.partition:
            lines.append(d("-q", r.partition))
        if r.account:
            lines.append(d("-A", r.account))
        if r.output:
            lines.append(d("-o", r.output))
        if r.error:
            lines.append(d("-e", r.error))
        elif r.output:
            lines.append(d("-j", "y"))  # stderr joins the output file, as with Slurm
        if r.working_directory:
            lines.append(d("-wd", r.working_directory))
        return lines

    def find_argv(self, name: str) -> list[str]:
        return ["qstat", "-xml"]  # qstat cannot select by name; parse_found does

    def parse_found(self, stdout: str, name: str) -> list[str]:
        """Job numbers of ``qstat -xml`` entries whose ``JB_name`` is ``name``."""
        try:
            root = ET.fromstring(stdout)
        except ET.ParseError:
            return []
        return [
            (job.findtext("JB_job_number") or "").strip()
            for job in root.iter("job_list")
            if (job.findtext("JB_name") or "").strip() == name
        ]

    def parse_job_id(self, stdout: str) -> str:
        """``qsub -terse`` prints ``ID`` (arrays: ``ID.1-10:1``); plain qsub ``Your job ID``."""
        for line in stdout.splitlines():
            if match := re.fullmatch(r"(\d+)(?:\.\d+-\d+:\d+)?", line.strip()):
                return match.group(1)
            if match := re.search(r"Your job (\d+)", line):
                return match.group(1)
        raise self._submit_error(stdout, "")

    def qstat_argv(self) -> list[str]:
        """The one ``qstat`` command (the user's pending and running jobs, XML)."""
        return ["qstat", "-xml"]

    def parse_qstat(self, stdout: str) -> dict[str, JobStatus]:
        """Parse ``qstat -xml`` into statuses keyed by job number."""
        try:
            root = ET.fromstring(stdout.strip() or "<job_info/>")
        except ET.ParseError as err:
            raise PollError(f"sge: cannot parse qstat XML output: {err}") from err
        found = {}
        for job in root.iter("job_list"):
            job_id = (job.findtext("JB_job_number") or "").strip()
            if job_id and job_id not in found:
                found[job_id] = map_qstat_state(job_id, (job.findtext("state") or "").strip())
        return found

    def poll(self, job_ids: Iterable[str]) -> dict[str, JobStatus]:
        """One ``qstat -xml``, then ``qacct -j ID`` for each id it no longer lists."""
        ids = self._unique_ids(job_ids)
        if not ids:
            return {}
        found = self.parse_qstat(self._run(self.qstat_argv()).stdout)
        return {job_id: found.get(job_id) or self._qacct_status(job_id) for job_id in ids}

    def _qacct_status(self, job_id: str) -> JobStatus:
        result = self._run(["qacct", "-j", job_id], check=False)
        if result.returncode == 0 and "=====" in result.stdout:
            return map_qacct(job_id, parse_qacct(result.stdout))
        text = result.stdout + result.stderr
        if re.search(r"job id \S+ not found|not found", text, re.I):
            return JobStatus(
                job_id, _B.UNKNOWN,
                reason="not in qstat and no accounting record (not yet written, or deleted "
                "before it ran)",
            )
        raise CommandFailedError(result.argv, result.returncode, result.stdout, result.stderr)

    def list_partitions(self) -> list[PartitionInfo]:
        """Cluster queues from one ``qconf -sq '*'`` (every queue's configuration)."""
        stdout = self._run(["qconf", "-sq", "*"]).stdout
        return [parse_queue_config(block) for block in re.split(r"\n\s*\n", stdout)
                if block.strip()]
