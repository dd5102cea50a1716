"""Site profiles: what a computing centre offers and how matdx should use it.

A site profile is a YAML file (``hpc/sites/*.yaml`` ships examples) naming the
scheduler, its partitions / queues with their limits, the MPI launcher, modules,
environment, scratch directory, how many jobs may sit in the queue and how often
the scheduler may be polled. :func:`load_site` validates it into an immutable
:class:`SiteProfile` (errors name the file and the field); :func:`check_site`
also asks the live scheduler, when its commands are on ``PATH``, whether the
partitions exist and match (``matdx hpc check SITE``).

Site lookup by name searches the directories in ``MATDX_SITES_PATH``
(``os.pathsep``-separated) first, then the profiles shipped in ``hpc/sites``.

Quote walltimes in YAML (``"24:00:00"``): unquoted, YAML 1.1 reads ``24:00:00``
as a base-60 integer.

Examples
--------
>>> site = load_site("local-slurm-testcluster")
>>> res = site.resources(job_name="demo", walltime="10min", ranks_per_node=2)
>>> res.partition, site.mpi.argv(res.total_ranks)[:3]
('debug', ['mpirun', '-np', '2'])
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from matdx.hpc.errors import CommandError, HPCError, ResourceError, SiteProfileError
from matdx.hpc.resources import (
    Commands,
    MemoryMiB,
    Resources,
    WalltimeSeconds,
    check_env_name,
    check_identifier,
    check_module,
    check_script_value,
    format_hms,
    format_memory,
    format_validation_error,
)
from matdx.hpc.scheduler import PartitionInfo, Runner, Scheduler, make_scheduler, scheduler_classes

SITES_DIR = Path(__file__).resolve().parent / "sites"
SITES_PATH_ENV = "MATDX_SITES_PATH"

_PROGRAM_RE = re.compile(r"[A-Za-z0-9_./+-]+")
_FLAG_RE = re.compile(r"-{1,2}[A-Za-z][A-Za-z0-9_-]*")
_SCRATCH_RE = re.compile(r"[A-Za-z0-9_./+@~${}-]+")
_RESERVED_OPTIONS = {"runner", "timeout", "shell"}

SchedulerName = Literal["slurm", "pbspro", "torque", "lsf", "sge"]


class PartitionSpec(BaseModel):
    """Limits of one partition / queue.

    Parameters
    ----------
    cores_per_node : int
        Cores of one node.
    memory_per_node : int or str
        Memory of one node usable by jobs; MiB (accepts ``"256G"``).
    max_walltime : int or str
        Longest walltime, s (accepts ``"48:00:00"``, ``"2-00:00:00"``).
    max_nodes : int
        Most nodes one job may use.
    gpus_per_node : int
        GPUs of one node.
    description : str
        Free text.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    cores_per_node: int = Field(ge=1, le=100_000)
    memory_per_node: MemoryMiB
    max_walltime: WalltimeSeconds
    max_nodes: int = Field(default=1, ge=1, le=1_000_000)
    gpus_per_node: int = Field(default=0, ge=0, le=1024)
    description: str = ""


class MPILauncher(BaseModel):
    """How to start MPI ranks inside an allocation.

    Parameters
    ----------
    launcher : str
        Program (``mpirun``, ``mpiexec``, ``srun``) or its absolute path.
    args : list of str
        Arguments placed after the rank count (``--bind-to none``).
    ranks_flag : str or None
        Flag before the rank count (``-np``, ``-n``); None to let the launcher
        take the count from the allocation.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    launcher: str = "mpirun"
    args: tuple[str, ...] = ()
    ranks_flag: str | None = "-np"

    @field_validator("launcher")
    @classmethod
    def _launcher(cls, value: str) -> str:
        if not _PROGRAM_RE.fullmatch(value) or value.startswith("-"):
            raise ValueError(f"{value!r} is not a program name or path")
        return value

    @field_validator("args")
    @classmethod
    def _args(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(check_script_value(a, "MPI launcher argument") for a in value)

    @field_validator("ranks_flag")
    @classmethod
    def _ranks_flag(cls, value: str | None) -> str | None:
        if value is not None and not _FLAG_RE.fullmatch(value):
            raise ValueError(f"{value!r} is not a command-line flag such as '-np' or '-n'")
        return value

    def argv(self, ranks: int) -> list[str]:
        """Launcher argv prefix for ``ranks`` ranks (append the program to run).

        Examples
        --------
        >>> MPILauncher(launcher="srun", ranks_flag="-n", args=("--mpi=pmix",)).argv(4)
        ['srun', '-n', '4', '--mpi=pmix']
        """
        if ranks < 1:
            raise ValueError(f"ranks must be at least 1, got {ranks}")
        count = [self.ranks_flag, str(ranks)] if self.ranks_flag else []
        return [self.launcher, *count, *self.args]


class SiteProfile(BaseModel):
    """A validated site profile; see the module docstring and ``hpc/sites/*.yaml``.

    Parameters
    ----------
    name : str
        Profile name (defaults to the file name without ``.yaml``).
    scheduler : {"slurm", "pbspro", "torque", "lsf", "sge"}
        The batch system.
    partitions : dict of str to PartitionSpec
        Partitions / queues matdx may use, with their limits.
    default_partition : str, optional
        Used when a request names none; defaults to the first partition.
    account, qos : str, optional
        Defaults for requests.
    require_account : bool
        Reject requests without an account.
    max_jobs_in_queue : int
        Most batch jobs matdx keeps queued or running at this site.
    min_poll_interval : int or str
        Shortest time between two polls, s.
    mpi : MPILauncher
        MPI launcher.
    modules, environment, pre_commands, post_commands
        Added to every request (site first, then the request's own).
    python : str, optional
        The Python that runs matdx's task farm on the compute nodes (an absolute path, or a
        name found on the batch job's ``PATH`` after the modules and pre_commands); by
        default the Python running matdx here.
    programs : list of str
        Programs the site's jobs run (``pw.x``, ``lmp``...), which ``matdx hpc check``
        starts in the site's environment.
    scratch : str
        Run directories' root on a filesystem the compute nodes see; may use
        ``$VAR`` and ``~`` (expanded by :meth:`scratch_path`).
    shell : str
        Batch script interpreter (``/bin/bash -l`` where ``module`` needs a login shell).
    command_timeout : float
        Timeout of each scheduler command, s.
    scheduler_options : dict
        Adapter-specific options (SGE: ``parallel_environment`` ...).
    description : str
        Free text.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str = ""
    scheduler: SchedulerName
    scheduler_options: dict[str, str | int | bool] = Field(default_factory=dict)
    shell: str = "/bin/bash"
    command_timeout: float = Field(default=60.0, gt=0, le=3600)
    partitions: dict[str, PartitionSpec]
    default_partition: str | None = None
    account: str | None = None
    require_account: bool = False
    qos: str | None = None
    max_jobs_in_queue: int = Field(default=100, ge=1, le=1_000_000)
    min_poll_interval: WalltimeSeconds = 30
    mpi: MPILauncher = Field(default_factory=MPILauncher)
    modules: tuple[str, ...] = ()
    environment: dict[str, str] = Field(default_factory=dict)
    pre_commands: Commands = ()
    post_commands: Commands = ()
    python: str | None = None
    programs: tuple[str, ...] = ()
    scratch: str

    @field_validator("python")
    @classmethod
    def _python(cls, value: str | None) -> str | None:
        if value is not None and (not _PROGRAM_RE.fullmatch(value) or value.startswith("-")):
            raise ValueError(f"{value!r} is not a program name or path")
        return value

    @field_validator("programs", mode="before")
    @classmethod
    def _programs(cls, value: Any) -> tuple[str, ...]:
        programs = _as_tuple(value)
        for program in programs:
            if not isinstance(program, str) or not _PROGRAM_RE.fullmatch(program) \
                    or program.startswith("-"):
                raise ValueError(f"{program!r} is not a program name or path")
        return programs

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_identifier(value, "site name")

    @field_validator("partitions")
    @classmethod
    def _partitions(cls, value: dict[str, PartitionSpec]) -> dict[str, PartitionSpec]:
        if not value:
            raise ValueError("at least one partition is needed")
        for key in value:
            check_identifier(key, "partition/queue name")
        return value

    @field_validator("account", "qos")
    @classmethod
    def _ident(cls, value: str | None) -> str | None:
        return None if value is None else check_identifier(value, "name")

    @field_validator("modules")
    @classmethod
    def _modules(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(check_module(m) for m in value)

    @field_validator("environment", mode="before")
    @classmethod
    def _environment(cls, value: Any) -> dict[str, str]:
        if not isinstance(value, Mapping):
            raise ValueError(f"expected a mapping of variable names to values, got {value!r}")
        out = {}
        for key, val in value.items():
            check_env_name(key)
            if isinstance(val, bool) or not isinstance(val, str | int | float):
                raise ValueError(f"value of {key} must be a string or number, got {val!r}")
            out[key] = check_script_value(str(val), f"value of {key}")
        return out

    @field_validator("scheduler_options")
    @classmethod
    def _options(cls, value: dict[str, str | int | bool]) -> dict[str, str | int | bool]:
        for key, val in value.items():
            check_script_value(key, "scheduler_options key")
            if isinstance(val, str):
                check_script_value(val, f"scheduler_options.{key}")
        return value

    @field_validator("scratch")
    @classmethod
    def _scratch(cls, value: str) -> str:
        if not _SCRATCH_RE.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a safe scratch path: use letters, digits, _ . / + @ - "
                "and $VAR / ${VAR} / ~"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SiteProfile:
        if self.default_partition is not None and self.default_partition not in self.partitions:
            raise ValueError(
                f"default_partition {self.default_partition!r} is not one of the partitions "
                f"({', '.join(self.partitions)})"
            )
        reserved = _RESERVED_OPTIONS & set(self.scheduler_options)
        if reserved:
            raise ValueError(
                f"scheduler_options: {', '.join(sorted(reserved))} are top-level settings "
                "(shell, command_timeout), not scheduler options"
            )
        try:
            self.scheduler_adapter()
        except TypeError as err:
            cls = scheduler_classes()[self.scheduler]
            raise ValueError(
                f"scheduler_options: {sorted(self.scheduler_options)} not all accepted by "
                f"{cls.__name__} ({err})"
            ) from err
        except HPCError as err:
            raise ValueError(f"scheduler_options / shell: {err}") from err
        return self

    # ------------------------------------------------------------ use
    def scheduler_adapter(self, runner: Runner | None = None) -> Scheduler:
        """The configured scheduler adapter (shell, timeout and options applied)."""
        return make_scheduler(
            self.scheduler, runner=runner, timeout=self.command_timeout, shell=self.shell,
            **self.scheduler_options,
        )

    def partition(self, name: str | None = None) -> tuple[str, PartitionSpec]:
        """Name and limits of partition ``name`` (or the default one).

        Raises
        ------
        ResourceError
            If the site has no such partition.
        """
        key = name or self.default_partition or next(iter(self.partitions))
        try:
            return key, self.partitions[key]
        except KeyError:
            raise ResourceError(
                f"partition: {key!r} is not a partition of site {self.name!r} "
                f"(known: {', '.join(self.partitions)})"
            ) from None

    def resources(self, **request: Any) -> Resources:
        """Build Resources for this site: site defaults merged in, then checked.

        The partition, account and QOS default to the site's; modules,
        environment, pre and post commands are the site's followed by (for the
        environment: overridden by) the request's.

        Parameters
        ----------
        **request
            Fields of :class:`~matdx.hpc.resources.Resources`.

        Raises
        ------
        ResourceError
            If a field is invalid or exceeds the partition's limits.
        """
        merged = dict(request)
        merged["partition"] = self.partition(request.get("partition"))[0]
        merged.setdefault("account", self.account)
        merged.setdefault("qos", self.qos)
        merged["modules"] = (*self.modules, *_as_tuple(request.get("modules", ())))
        merged["environment"] = {**self.environment, **dict(request.get("environment") or {})}
        merged["pre_commands"] = (*self.pre_commands, *_as_tuple(request.get("pre_commands", ())))
        merged["post_commands"] = (
            *self.post_commands, *_as_tuple(request.get("post_commands", ()))
        )
        resources = Resources(**merged)
        self.check_resources(resources)
        return resources

    def check_resources(self, resources: Resources) -> None:
        """Check a request against the partition's limits and the account rule.

        Raises
        ------
        ResourceError
            Naming the first field over its limit and the limit.
        """
        name, spec = self.partition(resources.partition)
        where = f"partition {name!r} of site {self.name!r}"
        if self.require_account and not resources.account:
            raise ResourceError(f"account: site {self.name!r} requires an account")
        if resources.nodes > spec.max_nodes:
            raise ResourceError(
                f"nodes: {resources.nodes} exceeds max_nodes {spec.max_nodes} of {where}"
            )
        if resources.cores_per_node > spec.cores_per_node:
            raise ResourceError(
                f"ranks_per_node × threads_per_rank: {resources.cores_per_node} cores exceed "
                f"cores_per_node {spec.cores_per_node} of {where}"
            )
        if resources.memory is not None and resources.memory > spec.memory_per_node:
            raise ResourceError(
                f"memory: {format_memory(resources.memory)} exceeds memory_per_node "
                f"{format_memory(spec.memory_per_node)} of {where}"
            )
        if resources.walltime > spec.max_walltime:
            raise ResourceError(
                f"walltime: {format_hms(resources.walltime)} exceeds max_walltime "
                f"{format_hms(spec.max_walltime)} of {where}"
            )
        if resources.gpus_per_node > spec.gpus_per_node:
            raise ResourceError(
                f"gpus_per_node: {resources.gpus_per_node} exceeds {spec.gpus_per_node} of {where}"
            )

    def scratch_path(self) -> Path:
        """The scratch directory with ``~`` and ``$VAR`` expanded.

        Raises
        ------
        SiteProfileError
            If a variable is not set.
        """
        expanded = os.path.expandvars(os.path.expanduser(self.scratch))
        if "$" in expanded:
            raise SiteProfileError(
                f"scratch: {self.scratch!r} uses an environment variable that is not set here"
            )
        return Path(expanded)


def _as_tuple(value: Any) -> tuple[Any, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(value or ())


# ---------------------------------------------------------------- loading
def site_search_path() -> list[Path]:
    """Directories searched for ``NAME.yaml``: ``$MATDX_SITES_PATH`` entries, then built-ins."""
    extra = [Path(p) for p in os.environ.get(SITES_PATH_ENV, "").split(os.pathsep) if p]
    return [*extra, SITES_DIR]


def list_sites() -> dict[str, Path]:
    """All site profiles found on the search path, name → file (first one wins)."""
    found: dict[str, Path] = {}
    for directory in site_search_path():
        if directory.is_dir():
            for path in sorted(directory.glob("*.yaml")):
                found.setdefault(path.stem, path)
    return found


def find_site(path_or_name: str | os.PathLike[str]) -> Path:
    """Resolve a site profile given as a path or a name.

    Raises
    ------
    SiteProfileError
        If no such file or profile exists (the message lists the known names).
    """
    text = os.fspath(path_or_name)
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or os.sep in text:
        if path.is_file():
            return path
        raise SiteProfileError(f"site profile file {text!r} not found")
    try:
        check_identifier(text, "site name")
    except ValueError as err:
        raise SiteProfileError(str(err)) from err
    sites = list_sites()
    if text in sites:
        return sites[text]
    raise SiteProfileError(
        f"no site profile named {text!r} (known: {', '.join(sorted(sites)) or 'none'}; "
        f"searched {', '.join(str(p) for p in site_search_path())})"
    )


def load_site(path_or_name: str | os.PathLike[str]) -> SiteProfile:
    """Load and validate a site profile.

    Parameters
    ----------
    path_or_name : str or path
        A YAML file, or a profile name looked up by :func:`find_site`.

    Returns
    -------
    SiteProfile

    Raises
    ------
    SiteProfileError
        If the file is missing, is not YAML, or a field is invalid; the message
        names the file and every bad field.
    """
    path = find_site(path_or_name)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise SiteProfileError(f"cannot read site profile {path}: {err}") from err
    except yaml.YAMLError as err:
        raise SiteProfileError(f"site profile {path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise SiteProfileError(f"site profile {path} must be a mapping, got {type(data).__name__}")
    data.setdefault("name", path.stem)
    try:
        return SiteProfile.model_validate(data)
    except ValidationError as err:
        raise SiteProfileError(format_validation_error(err, f"site profile {path}")) from err


# ---------------------------------------------------------------- checking
CheckStatus = Literal["pass", "warn", "fail", "skip"]


@dataclass(frozen=True)
class SiteCheck:
    """One line of a :class:`SiteCheckReport`."""

    name: str
    status: CheckStatus
    detail: str


@dataclass
class SiteCheckReport:
    """Result of :func:`check_site`.

    Attributes
    ----------
    site : str
        What was checked (profile name, or the argument when it did not load).
    path : str or None
        The profile file.
    checks : list of SiteCheck
        In order: profile, scratch, commands, partitions, MPI launcher.
    profile : SiteProfile or None
        The loaded profile when valid.
    """

    site: str
    path: str | None
    checks: list[SiteCheck] = field(default_factory=list)
    profile: SiteProfile | None = None

    @property
    def ok(self) -> bool:
        """True when no check failed (warnings and skips allowed)."""
        return all(c.status != "fail" for c in self.checks)

    def add(self, name: str, status: CheckStatus, detail: str) -> None:
        """Append a check."""
        self.checks.append(SiteCheck(name, status, detail))

    def format(self) -> str:
        """Plain-text report, one check per line, then the verdict."""
        lines = [f"site {self.site}" + (f" ({self.path})" if self.path else "")]
        lines += [f"  [{c.status.upper():4}] {c.name}: {c.detail}" for c in self.checks]
        lines.append("  OK" if self.ok else "  FAILED")
        return "\n".join(lines)


def check_site(
    path_or_name: str | os.PathLike[str],
    *,
    runner: Runner | None = None,
    which: Callable[[str], str | None] = shutil.which,
    probe: bool = False,
    probe_timeout_s: float = 300.0,
) -> SiteCheckReport:
    """Validate a site profile and, where possible, compare it with the live scheduler.

    Never raises for a bad profile or an unreachable scheduler: every finding is
    a line of the report. Live checks run only when all the scheduler's commands
    are on ``PATH`` (otherwise they are skipped, e.g. on a laptop).

    Parameters
    ----------
    path_or_name : str or path
        Profile file or name.
    runner : callable, optional
        Command runner passed to the adapter (tests replay recorded output).
    which : callable
        Program lookup, :func:`shutil.which` by default.
    probe : bool
        Also submit the probe job (:mod:`matdx.hpc.probe`), which reports whether matdx,
        mpi4py, the MPI launcher and each of the profile's ``programs`` start in the
        site's real batch environment (only when the scheduler is reachable).
    probe_timeout_s : float
        Longest wait for the probe job, s.

    Returns
    -------
    SiteCheckReport
        ``report.ok`` is False when any check failed.
    """
    report = SiteCheckReport(site=os.fspath(path_or_name), path=None)
    try:
        report.path = str(find_site(path_or_name))
        site = load_site(report.path)
    except SiteProfileError as err:
        report.add("profile", "fail", str(err))
        return report
    report.site, report.profile = site.name, site
    report.add(
        "profile", "pass",
        f"valid {site.scheduler} profile, partitions: {', '.join(site.partitions)}",
    )
    _check_scratch(site, report)
    adapter = site.scheduler_adapter(runner=runner)
    missing = [p for p in adapter.programs if which(p) is None]
    if len(missing) == len(adapter.programs):
        report.add("commands", "skip",
                   f"{site.scheduler} commands ({', '.join(adapter.programs)}) not on PATH; "
                   "live checks skipped")
        report.add("partitions", "skip", "scheduler not reachable from here")
    elif missing:
        report.add("commands", "fail", f"missing on PATH: {', '.join(missing)}")
        report.add("partitions", "skip", "scheduler commands incomplete")
    else:
        report.add("commands", "pass", f"found {', '.join(adapter.programs)}")
        _check_partitions(site, adapter, report)
        if probe:
            _probe(site, adapter, report, probe_timeout_s)
    launcher = site.mpi.launcher
    if which(launcher) is None:
        report.add("mpi", "warn",
                   f"launcher {launcher!r} not on PATH here (it may appear after module load "
                   "on the compute nodes)")
    else:
        report.add("mpi", "pass", f"launcher {launcher!r} found")
    return report


def _probe(site: SiteProfile, adapter: Scheduler, report: SiteCheckReport,
           timeout_s: float) -> None:
    from matdx.hpc.probe import probe_site

    try:
        findings = probe_site(site, adapter, timeout_s=timeout_s)
    except (HPCError, OSError, ResourceError) as err:
        report.add("probe job", "fail", str(err))
        return
    for finding in findings:
        status: CheckStatus = "pass" if finding.status == "pass" else "fail"
        report.add(f"batch job: {finding.name}", status, finding.detail)


def _check_scratch(site: SiteProfile, report: SiteCheckReport) -> None:
    try:
        scratch = site.scratch_path()
    except SiteProfileError as err:
        report.add("scratch", "fail", str(err))
        return
    if scratch.is_dir():
        if os.access(scratch, os.W_OK | os.X_OK):
            report.add("scratch", "pass", f"{scratch} exists and is writable")
        else:
            report.add("scratch", "fail", f"{scratch} exists but is not writable")
    else:
        report.add("scratch", "warn", f"{scratch} does not exist on this machine")


def _check_partitions(site: SiteProfile, adapter: Scheduler, report: SiteCheckReport) -> None:
    try:
        live = {p.name: p for p in adapter.list_partitions()}
    except (CommandError, HPCError, ValueError) as err:
        report.add("partitions", "fail", f"cannot list partitions: {err}")
        return
    for name, spec in site.partitions.items():
        info = live.get(name)
        if info is None:
            report.add(f"partition {name}", "fail",
                       f"not reported by {site.scheduler} (known: {', '.join(sorted(live))})")
            continue
        problems = _compare_partition(spec, info)
        if problems:
            report.add(f"partition {name}", "fail", "; ".join(problems))
        else:
            report.add(f"partition {name}", "pass", _describe(info))


def _compare_partition(spec: PartitionSpec, info: PartitionInfo) -> list[str]:
    problems = []
    if info.cpus_per_node is not None and spec.cores_per_node > info.cpus_per_node:
        problems.append(
            f"profile cores_per_node {spec.cores_per_node} > {info.cpus_per_node} reported"
        )
    if info.memory_per_node is not None and spec.memory_per_node > info.memory_per_node:
        problems.append(
            f"profile memory_per_node {format_memory(spec.memory_per_node)} > "
            f"{format_memory(info.memory_per_node)} reported"
        )
    if info.max_walltime is not None and spec.max_walltime > info.max_walltime:
        problems.append(
            f"profile max_walltime {format_hms(spec.max_walltime)} > "
            f"{format_hms(info.max_walltime)} reported"
        )
    if info.nodes is not None and spec.max_nodes > info.nodes:
        problems.append(f"profile max_nodes {spec.max_nodes} > {info.nodes} nodes reported")
    return problems


def _describe(info: PartitionInfo) -> str:
    parts = ["exists"]
    if info.cpus_per_node is not None:
        parts.append(f"{info.cpus_per_node} CPUs/node")
    if info.memory_per_node is not None:
        parts.append(f"{format_memory(info.memory_per_node)}/node")
    if info.nodes is not None:
        parts.append(f"{info.nodes} nodes")
    parts.append("no time limit" if info.max_walltime is None
                 else f"time limit {format_hms(info.max_walltime)}")
    return ", ".join(parts)
