"""The resource request of one batch job, validated once and immutable afterwards.

Every value that reaches a batch script or a command line passes through here.
Names (job name, partition, account, QOS, modules, environment variable names)
and paths are restricted to safe character sets, because scheduler directives
(``#SBATCH``, ``#PBS``, ``#BSUB``, ``#$``) are parsed by the scheduler, not by a
shell, and cannot be quoted. Free text that only reaches the shell body of the
script (environment values, command arguments) is rendered with :func:`shlex.quote`, so it is
always data, never code; it may hold no line break or other control character
(:func:`check_script_value`), since a scheduler reads directives line by line, quotes or not.

Commands (``pre_commands``, ``post_commands`` and the script's main commands) are
argv lists. A string is split with :func:`shlex.split`; shell syntax such as
``;``, ``|``, ``>``, ``$(...)`` or backticks is *not* interpreted: each word
becomes one quoted argument. Ship a script file and run it for anything that
needs a shell.

Examples
--------
>>> r = Resources(job_name="relax-si", nodes=2, ranks_per_node=4, walltime="02:00:00",
...               memory="8G", partition="standard", modules=["quantum-espresso/7.2"])
>>> r.walltime, r.memory, r.total_ranks
(7200, 8192, 8)
"""

from __future__ import annotations

import datetime as dt
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from matdx.hpc.errors import ResourceError
from matdx.safety.text import check_line

# fullmatch everywhere: ``$`` in re.match would accept a trailing newline.
JOB_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
IDENTIFIER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}")
MODULE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+/@=-]{0,255}")
PATH_RE = re.compile(r"[A-Za-z0-9_./%+@-]{1,4096}")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")

JOB_NAME_RULE = "1–64 characters from A-Z a-z 0-9 _ . -, starting with a letter"
IDENTIFIER_RULE = "1–128 characters from A-Z a-z 0-9 _ . @ -, starting with a letter or digit"
MODULE_RULE = "characters from A-Z a-z 0-9 _ . + / @ = -, starting with a letter or digit"
PATH_RULE = (
    "characters from A-Z a-z 0-9 _ . / % + @ - (no spaces, quotes, ':' or shell "
    "metacharacters), not starting with '-'"
)
ENV_NAME_RULE = "a letter or _ followed by letters, digits or _"

MAX_WALLTIME = 366 * 24 * 3600

_MEMORY_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*", re.IGNORECASE)
_MEMORY_UNITS_MIB = {"k": 1 / 1024, "": 1, "m": 1, "g": 1024, "t": 1024**2, "p": 1024**3}
_CLOCK_RE = re.compile(r"\s*(?:(\d+)-)?(\d+):(\d{1,2}):(\d{1,2})\s*")
_DAYS_CLOCK_RE = re.compile(r"\s*(\d+)-(\d+)(?::(\d{1,2}))?\s*")
_SUFFIX_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|hr|d|day|days)\s*", re.IGNORECASE)
_SUFFIX_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400,
                   "day": 86400, "days": 86400}


# ---------------------------------------------------------------- value parsers
def parse_memory(value: int | str) -> int:
    """Parse a memory amount into MiB.

    Parameters
    ----------
    value : int or str
        An int is MiB. A string is a number with an optional binary unit:
        ``"512M"``, ``"4G"``, ``"4GB"``, ``"4GiB"``, ``"1.5T"``, ``"2048"`` (MiB).

    Returns
    -------
    int
        Memory, MiB, rounded up; at least 1.

    Raises
    ------
    ValueError
        If the value is not a positive amount in one of those forms.

    Examples
    --------
    >>> parse_memory("4G"), parse_memory("1536MB"), parse_memory(100)
    (4096, 1536, 100)
    """
    if isinstance(value, bool):
        raise ValueError(f"memory must be an amount such as '4G' or MiB as int, got {value!r}")
    if isinstance(value, int):
        mib = float(value)
    elif isinstance(value, str):
        match = _MEMORY_RE.fullmatch(value)
        if not match:
            raise ValueError(
                f"{value!r} is not a memory amount; use e.g. '512M', '4G', '1.5T' or MiB as int"
            )
        mib = float(match.group(1)) * _MEMORY_UNITS_MIB[match.group(2).lower()]
    else:
        raise ValueError(f"memory must be a str such as '4G' or MiB as int, got {value!r}")
    if mib <= 0:
        raise ValueError(f"memory must be positive, got {value!r}")
    return max(1, int(-(-mib // 1)))


def parse_walltime(value: int | str | dt.timedelta) -> int:
    """Parse a wall-clock limit into seconds.

    Parameters
    ----------
    value : int, str or datetime.timedelta
        An int is seconds. A string is ``"HH:MM:SS"``, ``"D-HH:MM:SS"``,
        ``"D-HH"`` / ``"D-HH:MM"`` (Slurm style) or a number with a unit:
        ``"90s"``, ``"30min"``, ``"2h"``, ``"1d"``. ``"MM:SS"`` and ``"HH:MM"`` are
        rejected because schedulers disagree on what they mean.

    Returns
    -------
    int
        Walltime, s; between 1 s and 366 days.

    Raises
    ------
    ValueError
        If the value is not in one of those forms or out of range.

    Examples
    --------
    >>> parse_walltime("01:30:00"), parse_walltime("1-00:00:00"), parse_walltime("45min")
    (5400, 86400, 2700)
    """
    if isinstance(value, bool):
        raise ValueError(f"walltime must be seconds (int) or e.g. '02:00:00', got {value!r}")
    if isinstance(value, dt.timedelta):
        seconds = int(-(-value.total_seconds() // 1))
    elif isinstance(value, int):
        seconds = value
    elif isinstance(value, str):
        seconds = _parse_walltime_str(value)
    else:
        raise ValueError(f"walltime must be seconds (int) or e.g. '02:00:00', got {value!r}")
    if not 1 <= seconds <= MAX_WALLTIME:
        raise ValueError(f"walltime must be between 1 s and 366 days, got {value!r}")
    return seconds


def _parse_walltime_str(value: str) -> int:
    if match := _CLOCK_RE.fullmatch(value):
        days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
        if minutes > 59 or seconds > 59:
            raise ValueError(f"walltime {value!r}: minutes and seconds must be below 60")
        return ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if match := _DAYS_CLOCK_RE.fullmatch(value):
        days, hours, minutes = (int(g) if g else 0 for g in match.groups())
        if minutes > 59:
            raise ValueError(f"walltime {value!r}: minutes must be below 60")
        return ((days * 24 + hours) * 60 + minutes) * 60
    if match := _SUFFIX_RE.fullmatch(value):
        return int(-(-float(match.group(1)) * _SUFFIX_SECONDS[match.group(2).lower()] // 1))
    raise ValueError(
        f"{value!r} is not a walltime; use 'HH:MM:SS', 'D-HH:MM:SS', '90min', '2h', '1d' "
        "or seconds as int ('MM:SS' and 'HH:MM' are ambiguous and not accepted)"
    )


def format_hms(seconds: int) -> str:
    """Format seconds as ``HH:MM:SS`` (hours may exceed 24).

    Examples
    --------
    >>> format_hms(93784)
    '26:03:04'
    """
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}"


def format_memory(mib: int) -> str:
    """Format MiB compactly: whole GiB as ``"4G"``, otherwise ``"1536M"``.

    Examples
    --------
    >>> format_memory(4096), format_memory(1536)
    ('4G', '1536M')
    """
    return f"{mib // 1024}G" if mib % 1024 == 0 else f"{mib}M"


# ---------------------------------------------------------------- field checks
def check_job_name(value: str) -> str:
    """Return ``value`` if it is a safe job name, else raise ValueError."""
    if not isinstance(value, str) or not JOB_NAME_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a safe job name: use {JOB_NAME_RULE}")
    return value


def check_identifier(value: str, what: str = "name") -> str:
    """Return ``value`` if it is a safe partition/queue/account/QOS name."""
    if not isinstance(value, str) or not IDENTIFIER_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a safe {what}: use {IDENTIFIER_RULE}")
    return value


def check_module(value: str) -> str:
    """Return ``value`` if it is a safe environment-module name such as ``gcc/12.2.0``."""
    if not isinstance(value, str) or not MODULE_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a safe module name: use {MODULE_RULE}")
    return value


def check_path(value: Any) -> str:
    """Return ``value`` as str if it is a path safe for a scheduler directive."""
    text = str(value) if hasattr(value, "__fspath__") else value
    if not isinstance(text, str) or not PATH_RE.fullmatch(text) or text.startswith("-"):
        raise ValueError(f"{value!r} is not a safe path: use {PATH_RULE}")
    return text


def check_env_name(value: str) -> str:
    """Return ``value`` if it is a valid environment variable name."""
    if not isinstance(value, str) or not ENV_NAME_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid environment variable name: use {ENV_NAME_RULE}")
    return value


def check_script_value(value: str, what: str) -> str:
    """Return ``value`` if it can be written on one line of a batch script.

    A line break would start a new line that the scheduler reads as a directive (a ``#$``
    line in an SGE script is obeyed wherever it stands), whatever quoting the shell sees, so
    line breaks, carriage returns, NUL and every other control character are refused
    (:func:`matdx.safety.text.check_line`).

    Raises
    ------
    ValueError
        Naming ``what`` and the character found.
    """
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {value!r}")
    return check_line(value, what)


def to_argv(value: Any) -> tuple[str, ...]:
    """Turn a command given as a string or a sequence of strings into an argv tuple.

    A string is split with :func:`shlex.split` (no shell features are interpreted).

    Raises
    ------
    ValueError
        If the command is empty, has unbalanced quotes, or holds a non-string, a line break
        or another control character.

    Examples
    --------
    >>> to_argv("echo 'a b' c;d")
    ('echo', 'a b', 'c;d')
    """
    if isinstance(value, str):
        check_script_value(value, "command")
        try:
            argv = shlex.split(value)
        except ValueError as err:
            raise ValueError(f"command {value!r} cannot be split into words: {err}") from err
    elif isinstance(value, Sequence):
        argv = list(value)
    else:
        raise ValueError(f"a command must be a string or a list of strings, got {value!r}")
    if not argv:
        raise ValueError(f"a command must not be empty, got {value!r}")
    for arg in argv:
        check_script_value(arg, "command argument")
    return tuple(argv)


def _to_commands(value: Any) -> tuple[tuple[str, ...], ...]:
    if isinstance(value, str):
        raise ValueError(
            "expected a list of commands (each a string or a list of strings), got a single "
            f"string {value!r}; wrap it in a list"
        )
    if not isinstance(value, Sequence):
        raise ValueError(f"expected a list of commands, got {value!r}")
    return tuple(to_argv(item) for item in value)


def _to_str_tuple(value: Any) -> tuple[Any, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Sequence):
        return tuple(value)
    raise ValueError(f"expected a list of strings, got {value!r}")


Argv = tuple[str, ...]
Commands = Annotated[tuple[Argv, ...], BeforeValidator(_to_commands)]
MemoryMiB = Annotated[int, BeforeValidator(parse_memory)]
WalltimeSeconds = Annotated[int, BeforeValidator(parse_walltime)]


def format_validation_error(err: ValidationError, what: str) -> str:
    """Turn a pydantic ValidationError into one message naming every bad field.

    Parameters
    ----------
    err : pydantic.ValidationError
        The error.
    what : str
        What was being validated, e.g. ``"resources"`` or ``"site profile 'x.yaml'"``.

    Returns
    -------
    str
        ``"invalid <what>: <field>: <reason>; <field>: <reason>"``.
    """
    parts = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"]) or "(top level)"
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] not in ("value_error", "assertion_error") and "input" in item:
            shown = repr(item["input"])
            msg = f"{msg} (got {shown if len(shown) < 200 else shown[:200] + '…'})"
        parts.append(f"{loc}: {msg}")
    return f"invalid {what}: " + "; ".join(parts)


class Resources(BaseModel):
    """The resources and environment of one batch job.

    Invalid values raise :class:`~matdx.hpc.errors.ResourceError` whose message
    names the field, the value and what is accepted. Instances are immutable;
    use :meth:`replace` for a validated modified copy.

    Parameters
    ----------
    job_name : str
        Scheduler job name; 1–64 of ``A-Z a-z 0-9 _ . -``, starting with a letter.
    walltime : int, str or timedelta
        Wall-clock limit; stored as seconds (see :func:`parse_walltime`).
    nodes : int
        Number of nodes.
    ranks_per_node : int
        MPI ranks (scheduler tasks) per node.
    threads_per_rank : int
        Threads (CPUs) per rank; ``OMP_NUM_THREADS`` defaults to it.
    memory : int or str, optional
        Memory per node; stored as MiB (see :func:`parse_memory`).
    partition : str, optional
        Partition (Slurm) or queue (PBS, LSF, SGE).
    account : str, optional
        Account / project charged.
    qos : str, optional
        Quality of service (Slurm; Torque ``-l qos``).
    gpus_per_node : int
        GPUs per node.
    exclusive : bool
        Request whole nodes.
    modules : list of str
        Environment modules loaded (``module load``) before anything else runs.
    environment : dict of str to str
        Variables exported in the script; values are literal (no ``$VAR`` expansion).
    pre_commands, post_commands : list of commands
        Run before / after the main commands; a failing pre command ends the job
        with its exit code; post commands always run and the job keeps the main
        commands' exit code. Each command is an argv list or a string split with
        :func:`shlex.split`.
    output, error : str, optional
        Paths of the scheduler's stdout / stderr files (Slurm patterns such as
        ``%j`` are passed through to Slurm).
    working_directory : str, optional
        Directory the job runs in.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    job_name: str = "matdx"
    walltime: WalltimeSeconds
    nodes: int = Field(default=1, ge=1, le=100_000)
    ranks_per_node: int = Field(default=1, ge=1, le=4096)
    threads_per_rank: int = Field(default=1, ge=1, le=4096)
    memory: MemoryMiB | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    gpus_per_node: int = Field(default=0, ge=0, le=1024)
    exclusive: bool = False
    modules: Annotated[tuple[str, ...], BeforeValidator(_to_str_tuple)] = ()
    environment: dict[str, str] = Field(default_factory=dict)
    pre_commands: Commands = ()
    post_commands: Commands = ()
    output: str | None = None
    error: str | None = None
    working_directory: str | None = None

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as err:
            raise ResourceError(format_validation_error(err, "resources")) from err

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Resources:
        """Build from a mapping (e.g. a YAML block); raises ResourceError when invalid."""
        if not isinstance(data, Mapping):
            raise ResourceError(f"invalid resources: expected a mapping, got {data!r}")
        return cls(**dict(data))

    def replace(self, **changes: Any) -> Resources:
        """Return a validated copy with ``changes`` applied."""
        return type(self)(**{**self.model_dump(), **changes})

    # ------------------------------------------------------------ validators
    @field_validator("job_name")
    @classmethod
    def _job_name(cls, value: str) -> str:
        return check_job_name(value)

    @field_validator("partition")
    @classmethod
    def _partition(cls, value: str | None) -> str | None:
        return None if value is None else check_identifier(value, "partition/queue name")

    @field_validator("account")
    @classmethod
    def _account(cls, value: str | None) -> str | None:
        return None if value is None else check_identifier(value, "account name")

    @field_validator("qos")
    @classmethod
    def _qos(cls, value: str | None) -> str | None:
        return None if value is None else check_identifier(value, "QOS name")

    @field_validator("modules")
    @classmethod
    def _modules(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(check_module(m) for m in value)

    @field_validator("environment", mode="before")
    @classmethod
    def _environment(cls, value: Any) -> dict[str, str]:
        if not isinstance(value, Mapping):
            raise ValueError(f"expected a mapping of variable names to values, got {value!r}")
        env = {}
        for name, val in value.items():
            check_env_name(name)
            if isinstance(val, bool) or not isinstance(val, str | int | float):
                raise ValueError(f"value of {name} must be a string or number, got {val!r}")
            env[name] = check_script_value(str(val), f"value of {name}")
        return env

    @field_validator("output", "error", "working_directory", mode="before")
    @classmethod
    def _path(cls, value: Any) -> str | None:
        return None if value is None else check_path(value)

    # ------------------------------------------------------------ derived values
    @property
    def total_ranks(self) -> int:
        """Number of MPI ranks over all nodes."""
        return self.nodes * self.ranks_per_node

    @property
    def cores_per_node(self) -> int:
        """Cores used per node: ranks per node × threads per rank."""
        return self.ranks_per_node * self.threads_per_rank

    @property
    def total_cores(self) -> int:
        """Cores over all nodes."""
        return self.nodes * self.cores_per_node

    def script_environment(self) -> dict[str, str]:
        """Variables the script exports: ``OMP_NUM_THREADS`` by default, then ``environment``."""
        return {"OMP_NUM_THREADS": str(self.threads_per_rank), **self.environment}
