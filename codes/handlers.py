"""Error handlers: recognise a failed run from its files and propose a :class:`Correction`.

An :class:`ErrorHandler` looks only at a run directory (``detect``), so it works on a run that
just failed inside :func:`~matdx.codes.base.run_calculation` and on a dead run directory found
later by the workflow engine. ``correct`` returns what the next attempt should change: a nested
``parameter_updates`` dict that :func:`deep_merge` folds into the code parameters, optionally a
``restart_structure`` (the last ionic step) and ``resources`` changes. Restart files are
carried over by a ``parent_directory`` entry in the parameter updates: the templates copy what
they need (e.g. the Quantum ESPRESSO ``outdir``) from that directory into the new one.

Each handler has its own ``max_corrections`` budget; the caller counts how often each handler's
corrections were applied (``applied``) and a handler whose budget is spent is passed over.
Corrections escalate by reading the current parameters (a second SCF failure after the mixing
was already lowered gets the next remedy), so the same inputs always give the same correction.

Two handlers are shared by all codes: :class:`OutOfMemory` (stderr/stdout markers of an
out-of-memory kill) and :class:`Interrupted` (timeout, killed process, node that died, or a
code's own walltime stop); code modules subclass :class:`Interrupted` to restart properly.

Conventions for ``parameter_updates``: nested dicts are merged key by key; any other value
replaces the old one; a value of ``None`` means *unset this key* (the writers leave it out, so
the program default or the input set's value applies).
"""

from __future__ import annotations

import copy
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ase import Atoms

from matdx.codes.errors import CalculationFailed, Kind
from matdx.codes.execution import read_execution
from matdx.codes.results import atoms_to_dict

__all__ = [
    "RESOURCE_KEYS",
    "Correction",
    "ErrorHandler",
    "Interrupted",
    "OutOfMemory",
    "deep_merge",
    "read_text",
    "search",
]

RESOURCE_KEYS = ("ranks_factor", "memory_factor", "walltime_factor")
"""Keys of :attr:`Correction.resources`: multiply the ranks, the memory per rank, the walltime."""


def deep_merge(base: Mapping[str, Any], updates: Mapping[str, Any]) -> dict[str, Any]:
    """A new dict: ``base`` with ``updates`` merged in, recursively for nested dicts.

    Neither argument is modified; values are deep-copied. A ``None`` in ``updates`` is kept
    (it means *unset* to the writers).

    Examples
    --------
    >>> deep_merge({"electrons": {"conv_thr": 1e-8}}, {"electrons": {"mixing_beta": 0.3}})
    {'electrons': {'conv_thr': 1e-08, 'mixing_beta': 0.3}}
    """
    merged: dict[str, Any] = copy.deepcopy(dict(base))
    for key, value in updates.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def read_text(path: str | Path) -> str:
    """The text of a file, or ``""`` if it does not exist (undecodable bytes replaced)."""
    try:
        return Path(path).read_text(errors="replace")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return ""


def search(directory: str | Path, names: Iterable[str], pattern: re.Pattern[str]) -> str | None:
    """First match of ``pattern`` in the files ``names`` of ``directory`` (missing files are
    skipped); the matched text, or None."""
    for name in names:
        match = pattern.search(read_text(Path(directory) / name))
        if match:
            return match.group(0)
    return None


@dataclass(frozen=True)
class Correction:
    """What the next attempt of a failed calculation should change.

    Attributes
    ----------
    handler : str
        Name of the handler that proposed it.
    description : str
        What was wrong and what changes, for people reading the provenance.
    parameter_updates : dict
        Nested updates for the code parameters, applied with :func:`deep_merge` (``None``
        unsets a key).
    restart_structure : ase.Atoms or None
        Structure to start from instead of the original (e.g. the last ionic step).
    resources : dict
        Resource changes as factors: ``ranks_factor`` (e.g. 0.5: half the MPI ranks, so each
        has more memory), ``memory_factor``, ``walltime_factor``.
    errors : tuple of str
        The error names the handler found (custodian's names for its handlers).
    actions : tuple of dict
        The handler's own declarative actions, verbatim (custodian's ``{"dict": "INCAR",
        "action": {"_set": {...}}}``), recorded in the provenance.
    """

    handler: str
    description: str
    parameter_updates: dict[str, Any] = field(default_factory=dict)
    restart_structure: Atoms | None = None
    resources: dict[str, float] = field(default_factory=dict)
    errors: tuple[str, ...] = ()
    actions: tuple[dict[str, Any], ...] = ()

    def __post_init__(self) -> None:
        unknown = sorted(set(self.resources) - set(RESOURCE_KEYS))
        if unknown:
            raise ValueError(f"resources: unknown keys {unknown}; accepted: {list(RESOURCE_KEYS)}")

    def apply(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        """The corrected parameters: a new dict (``parameters`` is not modified)."""
        return deep_merge(parameters, self.parameter_updates)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly plain values; the structure as :func:`~matdx.codes.results.
        atoms_to_dict`."""
        return {
            "handler": self.handler,
            "description": self.description,
            "parameter_updates": copy.deepcopy(self.parameter_updates),
            "restart_structure": (
                None if self.restart_structure is None else atoms_to_dict(self.restart_structure)
            ),
            "resources": dict(self.resources),
            "errors": list(self.errors),
            "actions": copy.deepcopy(list(self.actions)),
        }


class ErrorHandler(ABC):
    """Recognises one kind of failure and knows the expert's remedy for it.

    Class attributes
    ----------------
    name : str
        Short identifier, recorded with every correction.
    kind : {"input", "numerical", "resources", "program", "infrastructure"}
        The failure kind this handler diagnoses (see :mod:`matdx.codes.errors`); a handler
        whose kind depends on what it finds overrides :meth:`kind_of`.
    error_class : type
        The :class:`~matdx.codes.errors.CalculationFailed` subclass raised when this handler
        is the first to recognise a failure (e.g. :class:`~matdx.codes.errors.SCFError`).
    default_max_corrections : int
        Budget when none is given to the constructor.
    checks_finished_runs : bool
        True for an after-the-run check (custodian's validators and their equivalents): it is
        consulted also when the program finished and its result says converged, so a run whose
        settings are wrong for what it found (fixed occupations on a metal, too coarse a k-mesh,
        forces above the threshold) is corrected and rerun, not accepted.

    Parameters
    ----------
    max_corrections
        How many times this handler's correction may be applied to one calculation.
    """

    name: ClassVar[str]
    kind: ClassVar[Kind]
    error_class: ClassVar[type[CalculationFailed]] = CalculationFailed
    default_max_corrections: ClassVar[int] = 3
    checks_finished_runs: ClassVar[bool] = False

    def __init__(self, max_corrections: int | None = None) -> None:
        budget = self.default_max_corrections if max_corrections is None else max_corrections
        if int(budget) != budget or budget < 0:
            raise ValueError(f"max_corrections={max_corrections!r}: expected an integer >= 0")
        self.max_corrections = int(budget)

    @abstractmethod
    def detect(self, directory: Path) -> bool:
        """True when the files in ``directory`` show this handler's failure."""

    def kind_of(self, directory: Path) -> Kind:
        """The failure kind of what this handler found in ``directory`` (its ``kind``)."""
        return self.kind

    @abstractmethod
    def correct(
        self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms
    ) -> Correction:
        """The correction for the next attempt.

        Parameters
        ----------
        directory
            The failed run directory (only read).
        parameters
            The code parameters of the failed attempt (not modified).
        atoms
            The input structure of the failed attempt (not modified).

        Raises
        ------
        NoCorrection
            When the failure is recognised but no further remedy is known.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_corrections={self.max_corrections})"


_OOM = re.compile(
    r"out of memory|oom[-_ ]kill|cannot allocate memory|insufficient virtual memory"
    r"|std::bad_alloc|allocation would exceed memory limit|exceeded memory limit"
    r"|memory limit exceeded|killed by the oom|MemoryError",
    re.IGNORECASE,
)


class OutOfMemory(ErrorHandler):
    """The program (or the batch system) reported running out of memory.

    Detects the markers of the Linux OOM killer, of Slurm (``oom-kill``, ``exceeded memory
    limit``), of Fortran/C++ runtimes (``insufficient virtual memory``, ``std::bad_alloc``,
    ``Cannot allocate memory``) in the given stdout/stderr files. Corrects with half the MPI
    ranks (each rank gets twice the memory when the ranks share the nodes), or twice the memory
    when the run used a single rank.

    Parameters
    ----------
    files
        File names (relative to the run directory) to scan.
    max_corrections
        Budget (default 2).
    """

    name = "out_of_memory"
    kind: ClassVar[Kind] = "resources"
    default_max_corrections = 2

    def __init__(self, files: Iterable[str], max_corrections: int | None = None) -> None:
        super().__init__(max_corrections)
        self.files = tuple(files)

    def detect(self, directory: Path) -> bool:
        return search(directory, self.files, _OOM) is not None

    def correct(
        self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms
    ) -> Correction:
        marker = search(directory, self.files, _OOM)
        record = read_execution(directory)
        if record is not None and record.ranks == 1:
            resources = {"memory_factor": 2.0}
            change = "request twice the memory (the run used a single rank)"
        else:
            resources = {"ranks_factor": 0.5}
            change = "use half the MPI ranks per node so each rank has twice the memory"
        return Correction(
            handler=self.name,
            description=f"out of memory ({marker!r}): {change}",
            resources=resources,
        )


_FATAL_SIGNALS = frozenset({"SIGKILL", "SIGTERM", "SIGINT", "SIGHUP", "SIGBUS", "SIGXCPU"})


class Interrupted(ErrorHandler):
    """The run was stopped from outside: timeout, walltime, a killed process or a dead node.

    Detects an execution record that says the timeout was reached, that a monitor stopped the
    program (a frozen run; a code's own handler claims the monitors it knows first, such as a
    diverging SCF), that the program ended on a fatal signal, or that was never completed (the
    node or the job died), and any of the code's own walltime messages (``markers`` in
    ``files``). Subclasses override
    :meth:`correct` to continue from where the run stopped; this base reruns unchanged with
    1.5 times the walltime when the limit was hit.

    Parameters
    ----------
    files
        Output files searched for ``markers``.
    markers
        Regular expression of the program's own walltime stop, or None.
    max_corrections
        Budget (default 5: restarts make progress each time).
    """

    name = "walltime"
    kind: ClassVar[Kind] = "resources"
    default_max_corrections = 5

    def __init__(
        self,
        files: Iterable[str] = (),
        markers: re.Pattern[str] | None = None,
        max_corrections: int | None = None,
    ) -> None:
        super().__init__(max_corrections)
        self.files = tuple(files)
        self.markers = markers

    def cause(self, directory: Path) -> tuple[str, bool] | None:
        """Why the run was interrupted and whether a time limit did it; None if it was not."""
        if self.markers is not None:
            marker = search(directory, self.files, self.markers)
            if marker:
                return f"the program stopped at its own time limit ({marker.strip()!r})", True
        record = read_execution(directory)
        if record is None:
            return None
        if record.stopped_by is not None:
            reasons = [a.get("reason", "") for a in record.monitor_actions
                       if a.get("monitor") == record.stopped_by]
            reason = reasons[-1] if reasons else record.stopped_by
            return f"stopped by the {record.stopped_by} monitor ({reason})", False
        if record.timed_out:
            return f"killed at the timeout of {record.timeout_s} s", True
        if not record.complete:
            return "the run never completed its execution record (job or node died)", False
        if record.signal in _FATAL_SIGNALS:
            return f"the program was killed by {record.signal}", False
        return None

    def detect(self, directory: Path) -> bool:
        return self.cause(directory) is not None

    def kind_of(self, directory: Path) -> Kind:
        """``"resources"`` when a time limit stopped the run, else ``"infrastructure"`` (a
        killed process, a job or node that died)."""
        cause = self.cause(directory)
        return "resources" if cause is not None and cause[1] else "infrastructure"

    def base_correction(self, directory: Path, description: str, **kwargs: Any) -> Correction:
        """A correction that states the cause and adds 1.5 times the walltime after a time
        limit; ``kwargs`` are further :class:`Correction` fields."""
        cause = self.cause(directory)
        text, timed = cause if cause is not None else ("not interrupted", False)
        resources = {"walltime_factor": 1.5} if timed else {}
        return Correction(
            handler=self.name, description=f"{text}: {description}", resources=resources, **kwargs
        )

    def correct(
        self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms
    ) -> Correction:
        return self.base_correction(directory, "rerun unchanged")
