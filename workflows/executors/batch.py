"""Batch-queue executors: each batch is one Slurm, PBS, LSF or SGE job running a task farm.

``start`` renders a batch script with the site profile's adapter (every value validated and
quoted there), writes it into the batch directory and submits it; the script runs::

    mpirun -np SLOTS+1 python -m matdx.hpc.farm MANIFEST --mpi     # farm: mpi
    python -m matdx.hpc.farm MANIFEST                              # farm: processes

Rank 0 of the MPI farm only schedules (it sleeps between messages), so a batch of ``SLOTS``
cores starts one rank more than it has cores: the launcher must allow that (Open MPI:
``OMPI_MCA_rmaps_base_oversubscribe=1`` in the site's environment; ``srun``: ``--overcommit``).

``poll`` asks the scheduler about all in-flight batches of the executor in one call, at most
once per ``min_poll_interval`` of the site (remembered across tick processes, see
:mod:`matdx.workflows.executors.pollstate`). A batch job that ended by walltime, cancellation,
node failure or memory exhaustion is an infrastructure failure: its unfinished tasks are
requeued without spending a retry. A job the scheduler no longer knows (Slurm forgets a job
``MinJobAge`` seconds after it ended) is judged from the farm's event log and claim file.

Batch jobs are named ``matdx-<batch id>``, so the job of a launch that was interrupted between
the submission and the store update can be found by name and cancelled (or adopted).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from matdx.hpc.errors import HPCError
from matdx.hpc.farm import ABANDONED, batch_claimant, claim_batch, read_events
from matdx.hpc.resources import Resources
from matdx.hpc.scheduler import Runner
from matdx.hpc.sites import SiteProfile, load_site
from matdx.hpc.startup import output_cause
from matdx.hpc.status import BatchState, JobStatus
from matdx.store.models import Batch
from matdx.workflows.executors.base import Allocation, BatchStatus, Executor
from matdx.workflows.executors.pollstate import PollState
from matdx.workflows.executors.spec import BatchExecutorSpec, executor_key

__all__ = ["BatchQueueExecutor", "batch_job_name", "batch_resources", "farm_command"]

log = logging.getLogger("matdx.workflows")

SCRIPT_FILE = "batch.sh"
OUTPUT_FILE = "batch.out"
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

#: Final scheduler states that mean the allocation was taken away, and how to say so.
INFRASTRUCTURE_FAILURES: dict[BatchState, str] = {
    BatchState.TIMEOUT: "walltime reached",
    BatchState.CANCELLED: "batch job cancelled",
    BatchState.NODE_FAIL: "node failure",
    BatchState.OUT_OF_MEMORY: "out of memory",
}


def batch_job_name(batch_id: str) -> str:
    """The scheduler job name of a batch: ``matdx-`` and the batch id."""
    return f"matdx-{batch_id}"


def batch_resources(
    spec: BatchExecutorSpec,
    site: SiteProfile,
    *,
    job_name: str,
    cores_per_node: int | None,
    nodes: int | None = None,
    working_directory: str | os.PathLike[str] | None = None,
    output: str | os.PathLike[str] | None = None,
) -> Resources:
    """The resource request of one batch job, merged with the site's defaults and checked
    against its partition's limits.

    Parameters
    ----------
    cores_per_node
        Cores (MPI ranks of one thread) per node; None: the spec's, else the partition's.
    nodes
        Nodes; None: the spec's.

    Raises
    ------
    ResourceError
        Naming the field that is invalid or over a limit.
    """
    wanted = spec.resources
    partition, limits = site.partition(wanted.partition)
    request: dict[str, Any] = {
        "job_name": job_name,
        "walltime": wanted.walltime,
        "nodes": nodes or wanted.nodes,
        "ranks_per_node": cores_per_node or wanted.cores_per_node or limits.cores_per_node,
        "threads_per_rank": 1,
        "partition": partition,
        "modules": wanted.modules,
        "environment": {
            **dict.fromkeys(THREAD_VARIABLES, "1"),
            **wanted.environment,
        },
        "pre_commands": wanted.pre_commands,
        "post_commands": wanted.post_commands,
    }
    for key in ("memory", "account", "qos"):
        if getattr(wanted, key) is not None:
            request[key] = getattr(wanted, key)
    if working_directory is not None:
        request["working_directory"] = str(working_directory)
    if output is not None:
        request["output"] = str(output)
    return site.resources(**request)


def farm_command(site: SiteProfile, farm: str, slots: int, manifest: str) -> list[str]:
    """The command line of a batch script's farm (see the module docstring)."""
    python = [site.python or sys.executable, "-m", "matdx.hpc.farm", str(manifest)]
    if farm == "mpi":
        return [*site.mpi.argv(slots + 1), *python, "--mpi"]
    return python


def _farm_state(directory: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The farm's ``farm-start`` and ``farm-end`` events (None when not written)."""
    start = end = None
    for event in read_events(directory):
        if event["event"] == "farm-start":
            start = event
        elif event["event"] == "farm-end":
            end = event
    return start, end


class BatchQueueExecutor(Executor):
    """Batches as batch jobs at one site (see the module docstring).

    Parameters
    ----------
    kind
        ``slurm``, ``pbs``, ``lsf`` or ``sge``.
    site
        The site profile.
    home
        The matdx home (poll state under ``home/executors``).
    name
        The executor key; defaults to ``KIND:SITE``.
    runner
        Runs scheduler commands (tests pass a recording or replaying runner).
    poll_interval_s
        Shortest time between scheduler queries, s; never below the site's.
    clock
        Current Unix time, s.
    """

    def __init__(
        self,
        kind: str,
        site: SiteProfile,
        home: str | Path,
        *,
        name: str | None = None,
        runner: Runner | None = None,
        poll_interval_s: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kind = kind
        self.site = site
        self.home = Path(home)
        self.name = name or executor_key({"type": kind, "site": site.name})
        self.scheduler = site.scheduler_adapter(runner=runner)
        interval = max(float(site.min_poll_interval), float(poll_interval_s or 0))
        safe = self.name.replace(":", "-").replace("/", "-")
        self.poll_state = PollState(self.home / "executors" / f"{safe}.poll.json", interval, clock)
        self.polls = 0  # scheduler queries made by this object (for tests and logs)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], home: str | Path) -> BatchQueueExecutor:
        """The executor of a validated batch ``executor`` section."""
        parsed = BatchExecutorSpec.model_validate(dict(spec))
        return cls(
            parsed.type,
            load_site(parsed.site),
            home,
            name=executor_key(spec),
            poll_interval_s=parsed.poll_interval,
        )

    # -- launching -----------------------------------------------------------------------

    def capacity(self, active: list[Batch], busy: Mapping[str, int]) -> int:
        """Batch jobs that may still be queued at this site (``max_jobs_in_queue``)."""
        return self.site.max_jobs_in_queue - len(active)

    def allocation(
        self, active: list[Batch], busy: Mapping[str, int], spec: Mapping[str, Any]
    ) -> Allocation | None:
        free = self.capacity(active, busy)
        if free < 1:
            return None
        parsed = BatchExecutorSpec.model_validate(dict(spec))
        _, limits = self.site.partition(parsed.resources.partition)
        cores_per_node = parsed.resources.cores_per_node or limits.cores_per_node
        return Allocation(
            slots=parsed.resources.nodes * cores_per_node,
            batches=free,
            max_tasks=parsed.max_tasks_per_batch,
            walltime_s=float(parsed.resources.walltime),
            margin_s=parsed.margin_s,
            default_estimate_s=parsed.task_estimate,
        )

    def start(self, batch: Batch, manifest: str) -> dict[str, Any]:
        """Render the batch script into the batch directory and submit it."""
        spec = BatchExecutorSpec.model_validate(batch.info["spec"])
        slots = int(batch.info["slots"])
        _, limits = self.site.partition(spec.resources.partition)
        per_node = spec.resources.cores_per_node or limits.cores_per_node
        nodes = min(spec.resources.nodes, math.ceil(slots / per_node))
        directory = Path(batch.directory)
        resources = batch_resources(
            spec,
            self.site,
            job_name=batch_job_name(batch.id),
            cores_per_node=per_node if nodes > 1 else slots,
            nodes=nodes,
            working_directory=directory,
            output=directory / OUTPUT_FILE,
        )
        command = farm_command(self.site, spec.farm, slots, manifest)
        script = self.scheduler.write_script(resources, [command], directory / SCRIPT_FILE)
        job_id = self.scheduler.submit(script)
        return {
            "scheduler_id": job_id,
            "host": socket.gethostname(),
            "info": {**batch.info, "submitted_at": time.time(), "nodes": nodes},
        }

    # -- following -----------------------------------------------------------------------

    def poll(self, batches: list[Batch]) -> dict[str, BatchStatus]:
        """One scheduler query for all ``batches`` (none before the minimum interval)."""
        if not batches:
            return {}
        if not self.poll_state.due():
            wait = self.poll_state.wait_s()
            return {
                b.id: BatchStatus(alive=True, reason=f"not polled (next poll in {wait:.0f} s)")
                for b in batches
            }
        ids = [b.scheduler_id for b in batches if b.scheduler_id]
        try:
            statuses = self.scheduler.poll(ids) if ids else {}
        except (HPCError, ValueError) as err:
            log.warning("%s: poll failed, batches assumed alive: %s", self.name, err)
            return {b.id: BatchStatus(alive=True, reason=f"poll failed: {err}") for b in batches}
        finally:
            self.polls += 1
        self.poll_state.record()
        return {
            b.id: self.status_of(b, statuses.get(b.scheduler_id or "")) for b in batches
        }

    def status_of(self, batch: Batch, status: JobStatus | None) -> BatchStatus:
        """What a scheduler status (None: not reported) means for a batch."""
        state = status.state if status is not None else BatchState.UNKNOWN
        if state.is_active:
            return BatchStatus(alive=True, reason=state.value)
        if state is BatchState.UNKNOWN:
            return self._forgotten(batch)
        native = status.native_state or state.value
        if state in INFRASTRUCTURE_FAILURES:
            detail = f" ({status.reason})" if status.reason else ""
            return BatchStatus(
                alive=False,
                reason=f"{INFRASTRUCTURE_FAILURES[state]}: batch job {batch.scheduler_id} "
                f"{native}{detail}",
                infrastructure_failure=True,
            )
        start, end = _farm_state(batch.directory)
        if end is not None:
            return BatchStatus(alive=False, reason=f"batch job {native}: farm {end['reason']}")
        code = status.exit_code if status.exit_code is not None else f"signal {status.signal}"
        if start is None and batch_claimant(batch.directory) is None:
            broken = self._startup_failure(batch, f"{native} (exit {code})")
            if broken is not None:
                return broken
        return BatchStatus(
            alive=False,
            reason=f"batch job {batch.scheduler_id} {native} (exit {code}) before its farm "
            f"finished; see {Path(batch.directory) / OUTPUT_FILE}",
            infrastructure_failure=True,
        )

    def _forgotten(self, batch: Batch) -> BatchStatus:
        """A batch job the scheduler does not know: decide from the farm's files."""
        start, end = _farm_state(batch.directory)
        if end is not None:
            return BatchStatus(alive=False, reason=f"farm {end['reason']}")
        claimant = batch_claimant(batch.directory)
        if claimant is None and claim_batch(batch.directory, ABANDONED):
            broken = self._startup_failure(batch, "ended")
            if broken is not None:
                return broken
            return BatchStatus(
                alive=False,
                reason="the scheduler does not know the batch job and its farm never started",
                infrastructure_failure=True,
            )
        if batch_claimant(batch.directory) == ABANDONED:
            return BatchStatus(alive=False, reason="abandoned", infrastructure_failure=True)
        if start is None:  # claimed this instant by a farm that is starting
            return BatchStatus(alive=True, reason="farm starting")
        return BatchStatus(
            alive=False,
            reason="the scheduler no longer knows the batch job and its farm did not finish "
            "(killed)",
            infrastructure_failure=True,
        )

    def _startup_failure(self, batch: Batch, how: str) -> BatchStatus | None:
        """The status of a batch job that ended before its farm started, when its output
        says why (None when it does not)."""
        output = Path(batch.directory) / OUTPUT_FILE
        cause = output_cause(
            output,
            placeholders=[(str(batch.directory), "BATCH_DIR"),
                          (batch.scheduler_id or "", "JOB_ID")],
        )
        if cause is None:
            return None
        return BatchStatus(
            alive=False,
            reason=f"batch job {batch.scheduler_id} {how} before its farm started: {cause} "
            f"(in {output})",
            infrastructure_failure=True,
            startup_failure=cause,
        )

    def cancel(self, batch: Batch) -> None:
        ids = [batch.scheduler_id] if batch.scheduler_id else self.find_jobs(batch.id)
        if ids:
            self.scheduler.cancel(ids)

    def adopt(self, batch: Batch) -> dict[str, Any]:
        """The job id of an interrupted launch: from the farm's start event, else by name."""
        start, _ = _farm_state(batch.directory)
        if start is not None and start.get("scheduler_job_id"):
            return {"scheduler_id": str(start["scheduler_job_id"])}
        found = self.find_jobs(batch.id)
        return {"scheduler_id": found[0]} if found else {}

    def abandon(self, batch: Batch) -> None:
        """Cancel the batch job an interrupted launch may have left in the queue."""
        found = self.find_jobs(batch.id)
        if found:
            log.info("%s: cancelling orphan batch job(s) %s of %s", self.name, found, batch.id)
            self.scheduler.cancel(found)

    def find_jobs(self, batch_id: str) -> list[str]:
        """Ids of the queued or running jobs named after ``batch_id`` (one command)."""
        return self.scheduler.find_by_name(batch_job_name(batch_id))
