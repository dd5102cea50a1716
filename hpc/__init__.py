"""Batch schedulers, site profiles and the single-node Slurm test cluster.

``matdx.hpc`` is a leaf: it imports nothing else of matdx. The names below are
loaded lazily, so ``python -m matdx.hpc.farm`` on a compute node does not pay for
pydantic and YAML.

Typical use::

    from matdx.hpc import load_site

    site = load_site("local-slurm-testcluster")
    scheduler = site.scheduler_adapter()
    resources = site.resources(job_name="relax-si", walltime="30min", ranks_per_node=4)
    script = scheduler.write_script(
        resources, [[*site.mpi.argv(resources.total_ranks), "pw.x", "-in", "pw.in"]],
        rundir / "job.sh",
    )
    job_id = scheduler.submit(script)
    status = scheduler.poll([job_id])[job_id]      # JobStatus(state=BatchState.QUEUED, ...)
    scheduler.cancel([job_id])
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "CommandError": "errors",
    "CommandFailedError": "errors",
    "CommandNotFoundError": "errors",
    "CommandTimeoutError": "errors",
    "HPCError": "errors",
    "PollError": "errors",
    "ResourceError": "errors",
    "SiteProfileError": "errors",
    "SubmitError": "errors",
    "UnsupportedResourceError": "errors",
    "LSFScheduler": "lsf",
    "PBSProScheduler": "pbs",
    "TorqueScheduler": "pbs",
    "Resources": "resources",
    "parse_memory": "resources",
    "parse_walltime": "resources",
    "CommandResult": "scheduler",
    "PartitionInfo": "scheduler",
    "Scheduler": "scheduler",
    "make_scheduler": "scheduler",
    "scheduler_classes": "scheduler",
    "SGEScheduler": "sge",
    "MPILauncher": "sites",
    "PartitionSpec": "sites",
    "SiteCheckReport": "sites",
    "SiteProfile": "sites",
    "check_site": "sites",
    "list_sites": "sites",
    "load_site": "sites",
    "SlurmScheduler": "slurm",
    "BatchState": "status",
    "JobStatus": "status",
}

__all__ = [
    "BatchState",
    "CommandError",
    "CommandFailedError",
    "CommandNotFoundError",
    "CommandResult",
    "CommandTimeoutError",
    "HPCError",
    "JobStatus",
    "LSFScheduler",
    "MPILauncher",
    "PBSProScheduler",
    "PartitionInfo",
    "PartitionSpec",
    "PollError",
    "ResourceError",
    "Resources",
    "SGEScheduler",
    "Scheduler",
    "SiteCheckReport",
    "SiteProfile",
    "SiteProfileError",
    "SlurmScheduler",
    "SubmitError",
    "TorqueScheduler",
    "UnsupportedResourceError",
    "check_site",
    "list_sites",
    "load_site",
    "make_scheduler",
    "parse_memory",
    "parse_walltime",
    "scheduler_classes",
]


def __getattr__(name: str) -> Any:
    """Import the submodule that defines ``name`` on first access (PEP 562)."""
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'matdx.hpc' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"matdx.hpc.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:
    from matdx.hpc.errors import (
        CommandError,
        CommandFailedError,
        CommandNotFoundError,
        CommandTimeoutError,
        HPCError,
        PollError,
        ResourceError,
        SiteProfileError,
        SubmitError,
        UnsupportedResourceError,
    )
    from matdx.hpc.lsf import LSFScheduler
    from matdx.hpc.pbs import PBSProScheduler, TorqueScheduler
    from matdx.hpc.resources import Resources, parse_memory, parse_walltime
    from matdx.hpc.scheduler import (
        CommandResult,
        PartitionInfo,
        Scheduler,
        make_scheduler,
        scheduler_classes,
    )
    from matdx.hpc.sge import SGEScheduler
    from matdx.hpc.sites import (
        MPILauncher,
        PartitionSpec,
        SiteCheckReport,
        SiteProfile,
        check_site,
        list_sites,
        load_site,
    )
    from matdx.hpc.slurm import SlurmScheduler
    from matdx.hpc.status import BatchState, JobStatus
