"""The ``executor`` section of a campaign file: one validated model per executor type.

::

    executor: {type: local, workers: 4}

    executor:
      type: slurm                     # slurm | pbs | lsf | sge
      site: local-slurm-testcluster   # a site profile name, or a path to its YAML file
      resources:                      # one batch job (allocation); limits from the site
        walltime: "00:30:00"
        nodes: 1
        cores_per_node: 8             # default: the partition's cores per node
        partition: debug
      max_tasks_per_batch: 200
      farm: mpi                       # mpi (mpiexec ... --mpi) | processes (one node)
      walltime_margin: 60             # s kept free at the end of the walltime
      task_estimate: 600              # s, for jobs with no estimate and no history
      max_output_mb: 65536            # MiB, largest output file harvest takes (any type)

    executor: {type: dask, scheduler: "tcp://10.0.0.1:8786"}
    executor: {type: dask, cluster: slurm, queue: debug, cores: 1, memory: 1GB,
               walltime: "00:05:00", interface: lo, workers: 2}

    executor: {type: fireworks, launchpad: my_launchpad.yaml, category: matdx}

:func:`validate_executor` picks the model from ``type`` and reports errors with the field's
path inside the section (``executor.resources.walltime: ... exceeds max_walltime ...``);
a batch executor's site profile is loaded and its resources are checked against the
partition's limits when the campaign file is read, before anything is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from matdx.hpc.errors import HPCError
from matdx.hpc.resources import Commands, MemoryMiB, WalltimeSeconds, check_identifier, check_module

__all__ = [
    "BATCH_TYPES",
    "BatchExecutorSpec",
    "BatchResourcesSpec",
    "DaskExecutorSpec",
    "FireworksExecutorSpec",
    "LocalExecutorSpec",
    "executor_key",
    "site_scheduler_matches",
    "validate_executor",
]

#: Executor types that submit to a batch queue, and the site-profile schedulers each accepts.
BATCH_TYPES: dict[str, tuple[str, ...]] = {
    "slurm": ("slurm",),
    "pbs": ("pbspro", "torque"),
    "lsf": ("lsf",),
    "sge": ("sge",),
}
KEY_LENGTH = 40  # Batch.executor holds at most this many characters
_ADDRESS_RE = re.compile(r"(tcp|tls|inproc|ucx|ws|wss)://[A-Za-z0-9_.:\[\]/-]{1,200}")
_DASK_SIZE_RE = re.compile(r"\d+(\.\d+)?\s*([kKMGT]i?B|B)?")


class LocalExecutorSpec(BaseModel):
    """Worker processes on this machine."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["local"] = "local"
    workers: PositiveInt | None = None
    # Largest output file (and result.json) harvest takes from a run directory, MiB;
    # default 64 GiB (matdx.workflows.rundir.DEFAULT_MAX_OUTPUT_BYTES).
    max_output_mb: int | None = Field(None, ge=1, le=1 << 30, exclude_if=lambda v: v is None)


class BatchResourcesSpec(BaseModel):
    """The allocation of one batch job. Units: walltime s (or ``"HH:MM:SS"``, ``"30min"``),
    memory MiB per node (or ``"4G"``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    walltime: WalltimeSeconds = 3600
    nodes: int = Field(1, ge=1, le=100_000)
    cores_per_node: PositiveInt | None = None
    memory: MemoryMiB | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    modules: tuple[str, ...] = ()
    environment: dict[str, str] = Field(default_factory=dict)
    pre_commands: Commands = ()
    post_commands: Commands = ()

    @field_validator("partition", "account", "qos")
    @classmethod
    def _identifier(cls, value: str | None) -> str | None:
        return None if value is None else check_identifier(value)

    @field_validator("modules")
    @classmethod
    def _modules(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(check_module(m) for m in value)


class BatchExecutorSpec(BaseModel):
    """Batch jobs on a Slurm, PBS, LSF or SGE site, each running one task farm."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["slurm", "pbs", "lsf", "sge"]
    site: str = Field(min_length=1, max_length=4096)
    resources: BatchResourcesSpec = Field(default_factory=BatchResourcesSpec)
    max_tasks_per_batch: int = Field(1000, ge=1, le=20_000)
    farm: Literal["mpi", "processes"] = "mpi"
    walltime_margin: WalltimeSeconds | None = None
    task_estimate: WalltimeSeconds | None = None
    poll_interval: WalltimeSeconds | None = None
    # Largest output file (and result.json) harvest takes from a run directory, MiB;
    # default 64 GiB (matdx.workflows.rundir.DEFAULT_MAX_OUTPUT_BYTES).
    max_output_mb: int | None = Field(None, ge=1, le=1 << 30, exclude_if=lambda v: v is None)

    @field_validator("site")
    @classmethod
    def _site(cls, value: str) -> str:
        """A path (``/`` or ``.yaml``) becomes absolute, so ticks from cron find it."""
        if os.sep in value or value.endswith((".yaml", ".yml")):
            return str(Path(value).expanduser().absolute())
        return check_identifier(value, "site name")

    @property
    def margin_s(self) -> float:
        """Seconds kept free at the end of the walltime: as given, else 10 % up to 60 s."""
        if self.walltime_margin is not None:
            return float(self.walltime_margin)
        return min(60.0, 0.1 * self.resources.walltime)


class DaskExecutorSpec(BaseModel):
    """Jobs as Dask tasks: on a running scheduler, on a dask-jobqueue cluster (``slurm``), or
    on a local cluster of ``workers`` processes started for the batch (``local``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["dask"]
    scheduler: str | None = None
    cluster: Literal["slurm", "local"] | None = None
    queue: str | None = None
    account: str | None = None
    cores: PositiveInt = 1
    processes: PositiveInt = 1
    memory: str = "1GB"
    walltime: WalltimeSeconds = 3600
    interface: str | None = None
    workers: PositiveInt = 1
    tasks_in_flight: int = Field(1000, ge=1, le=100_000)
    # Largest output file (and result.json) harvest takes from a run directory, MiB;
    # default 64 GiB (matdx.workflows.rundir.DEFAULT_MAX_OUTPUT_BYTES).
    max_output_mb: int | None = Field(None, ge=1, le=1 << 30, exclude_if=lambda v: v is None)

    @field_validator("scheduler")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and not _ADDRESS_RE.fullmatch(value):
            raise ValueError(f"{value!r} is not a Dask scheduler address such as tcp://host:8786")
        return value

    @field_validator("queue", "account", "interface")
    @classmethod
    def _identifier(cls, value: str | None) -> str | None:
        return None if value is None else check_identifier(value)

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str) -> str:
        if not _DASK_SIZE_RE.fullmatch(value):
            raise ValueError(f"{value!r} is not a memory size such as '1GB' or '512MiB'")
        return value


class FireworksExecutorSpec(BaseModel):
    """Jobs as Fireworks on an existing FireWorks LaunchPad, run by FireWorks' own launchers
    (``rlaunch``, ``qlaunch``); see :mod:`matdx.workflows.executors.fireworks`.

    ``launchpad`` is the LaunchPad file (``my_launchpad.yaml``); ``category`` and ``fworker``
    become every Firework's ``_category`` and ``_fworker``; ``category_by_cores`` maps a least
    number of cores to the category of the jobs that need at least that many (the largest
    key not above a job's cores wins, over ``category``); ``lost_after`` (s) is how long a
    RUNNING Firework may go without a ping before its job is requeued.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["fireworks"]
    launchpad: str = Field(min_length=1, max_length=4096)
    category: str | None = None
    fworker: str | None = None
    category_by_cores: dict[PositiveInt, str] = Field(default_factory=dict)
    lost_after: WalltimeSeconds = 4 * 3600
    max_tasks_per_batch: int = Field(1000, ge=1, le=20_000)

    @field_validator("launchpad")
    @classmethod
    def _launchpad(cls, value: str) -> str:
        """Absolute, so that ticks from cron find it; it must be a readable YAML mapping."""
        path = Path(value).expanduser().absolute()
        if not path.is_file():
            raise ValueError(f"no LaunchPad file {str(path)!r}")
        import yaml

        try:
            content = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as err:
            raise ValueError(f"{str(path)!r} is not a readable LaunchPad YAML file: {err}") from err
        if not isinstance(content, Mapping):
            raise ValueError(f"{str(path)!r} is not a LaunchPad file (expected a mapping)")
        return str(path)

    @field_validator("category", "fworker")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return None if value is None else check_identifier(value)

    @field_validator("category_by_cores")
    @classmethod
    def _categories(cls, value: dict[int, str]) -> dict[int, str]:
        return {cores: check_identifier(name) for cores, name in value.items()}


ExecutorModel = (
    LocalExecutorSpec | BatchExecutorSpec | DaskExecutorSpec | FireworksExecutorSpec
)
_MODELS: dict[str, type[BaseModel]] = {
    "local": LocalExecutorSpec,
    "dask": DaskExecutorSpec,
    "fireworks": FireworksExecutorSpec,
    **dict.fromkeys(BATCH_TYPES, BatchExecutorSpec),
}


def _error(loc: tuple[str | int, ...], message: str, value: Any) -> InitErrorDetails:
    return {
        "type": PydanticCustomError("executor", "{message}", {"message": message}),
        "loc": loc,
        "input": value,
    }


def validate_executor(value: Any) -> ExecutorModel:
    """Validate an ``executor`` section into the model its ``type`` names.

    Raises
    ------
    ValueError
        For an unknown type.
    pydantic.ValidationError
        With locations relative to the section (``site``, ``resources.walltime``).
    """
    if isinstance(value, ExecutorModel):
        return value
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a mapping such as {{type: local}}, got {value!r}")
    kind = value.get("type", "local")
    model = _MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        message = f"unknown executor {kind!r}; available: {', '.join(_MODELS)}"
        raise ValidationError.from_exception_data("executor", [_error(("type",), message, kind)])
    spec = model.model_validate(dict(value))
    if isinstance(spec, BatchExecutorSpec):
        problems = check_batch_spec(spec)
        if problems:
            raise ValidationError.from_exception_data(
                "executor", [_error(loc, msg, value) for loc, msg in problems]
            )
    if isinstance(spec, DaskExecutorSpec) and (spec.scheduler is None) == (spec.cluster is None):
        message = "give exactly one of scheduler (an address) and cluster (slurm or local)"
        raise ValidationError.from_exception_data(
            "executor", [_error(("scheduler",), message, value)]
        )
    return spec


def site_scheduler_matches(kind: str, scheduler: str) -> bool:
    """Whether a site profile's scheduler serves executor type ``kind``."""
    return scheduler in BATCH_TYPES.get(kind, ())


# ResourceError messages start with the field they are about (see matdx.hpc.sites).
_RESOURCE_FIELDS = {
    "ranks_per_node × threads_per_rank": "cores_per_node",
    "ranks_per_node": "cores_per_node",
    "threads_per_rank": "cores_per_node",
}


def check_batch_spec(spec: BatchExecutorSpec) -> list[tuple[tuple[str, ...], str]]:
    """Problems of a batch spec against its site profile, as (location, message) pairs."""
    from matdx.hpc.sites import load_site
    from matdx.workflows.executors.batch import batch_resources

    try:
        site = load_site(spec.site)
    except HPCError as err:
        return [(("site",), str(err))]
    if not site_scheduler_matches(spec.type, site.scheduler):
        return [
            (
                ("type",),
                f"site {site.name!r} runs {site.scheduler}, not {spec.type} "
                f"(use type: {next(k for k, v in BATCH_TYPES.items() if site.scheduler in v)})",
            )
        ]
    try:
        batch_resources(spec, site, job_name="matdx-check", cores_per_node=None)
    except HPCError as err:
        message = str(err).removeprefix("invalid resources: ")
        field, _, reason = message.partition(": ")
        field = _RESOURCE_FIELDS.get(field, field)
        if field in BatchResourcesSpec.model_fields and reason:
            return [(("resources", field), reason)]
        return [(("resources",), message)]
    return []


def executor_key(spec: Mapping[str, Any]) -> str:
    """The name of the executor serving a campaign's ``executor`` section.

    Campaigns with equal keys share one executor (and its batches, poll and queue cap):
    ``local``; ``slurm:SITE`` for a batch queue (per site, whatever the resources; a site
    file adds a hash of its path, ``slurm:NAME@HASH``); ``dask:``
    and a hash of the scheduler address or cluster settings; ``fireworks:`` and a hash of the
    LaunchPad file's path.
    """
    kind = spec.get("type", "local")
    if kind == "local":
        return "local"
    if kind in BATCH_TYPES:
        site = str(spec["site"])
        if os.sep in site:  # a site file: its name, and its path so two files never share
            path = str(Path(site).resolve())
            key = f"{kind}:{Path(site).stem}@{hashlib.sha256(path.encode()).hexdigest()[:8]}"
        else:
            key = f"{kind}:{site}"
    elif kind == "fireworks":
        path = str(Path(str(spec["launchpad"])).resolve())
        key = f"fireworks:{hashlib.sha256(path.encode()).hexdigest()[:12]}"
    else:
        identity = {
            k: v for k, v in spec.items() if k not in ("tasks_in_flight", "max_output_mb")
        }
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        key = f"{kind}:{digest[:12]}"
    if len(key) > KEY_LENGTH:
        digest = hashlib.sha256(key.encode()).hexdigest()[:10]
        key = f"{key[: KEY_LENGTH - 11]}~{digest}"
    return key
