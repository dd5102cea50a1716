"""The code-adapter interface: :class:`Template`, :func:`run_calculation`, :func:`diagnose`.

One :class:`Template` per program writes inputs, names the program's arguments and parses the
outputs into a :class:`~matdx.codes.results.CalculationResult`; it knows nothing of the machine.
A :class:`~matdx.codes.execution.Profile` says how to start the program here.
:func:`run_calculation` ties them together: write, execute, read, and on failure ask the
template's error handlers what went wrong and raise
:class:`~matdx.codes.errors.CalculationFailed` with the correction for the next attempt.

Run directory layout written here (besides the code's own files)::

    parameters.json   code, calculation and the complete parameters as written
    execution.json    argv, ranks, threads, timeout, start/end, exit code, signal

Examples
--------
>>> from matdx.codes.espresso import EspressoTemplate           # doctest: +SKIP
>>> template = EspressoTemplate()                               # doctest: +SKIP
>>> result = run_calculation(template, template.profile(), "run1", atoms,
...                          {"system": {"ecutwfc": 30}}, "static")  # doctest: +SKIP
>>> result.energy, result.stress                                # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from ase import Atoms

from matdx.codes.errors import (
    CalculationFailed,
    InputError,
    Kind,
    NoCorrection,
    ReadError,
    SCFError,
    UnsupportedCalculation,
)
from matdx.codes.execution import (
    EXECUTION_FILE,
    ExecutionRecord,
    Profile,
    execute,
    read_execution,
)
from matdx.codes.handlers import Correction, ErrorHandler
from matdx.codes.monitors import FrozenOutput, Monitor
from matdx.codes.results import CalculationResult
from matdx.safety.text import UnsafeValueError

__all__ = [
    "PARAMETERS_FILE",
    "Template",
    "diagnose",
    "explain_failure",
    "read_parameters_record",
    "refusing_unsafe_values",
    "run_calculation",
    "write_parameters_record",
]

PARAMETERS_FILE = "parameters.json"


@contextmanager
def refusing_unsafe_values() -> Iterator[None]:
    """Turn a :class:`~matdx.safety.text.UnsafeValueError` raised by the checks of user
    values in the block into an :class:`InputError` (a setup error: nothing is written).

    Every template checks the strings of its parameters with :mod:`matdx.safety.text` inside
    this block at the start of ``write_input``, before any file is written.
    """
    try:
        yield
    except UnsafeValueError as err:
        raise InputError(str(err)) from err


def write_parameters_record(
    directory: Path, code: str, calculation: str, parameters: Mapping[str, Any]
) -> None:
    """Write ``parameters.json``: the complete parameters as written into the inputs."""
    path = Path(directory) / PARAMETERS_FILE
    data = {"code": code, "calculation": calculation, "parameters": parameters}
    tmp = path.with_name(f".{PARAMETERS_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_parameters_record(directory: Path) -> dict[str, Any] | None:
    """The content of ``parameters.json`` (keys code, calculation, parameters), or None."""
    try:
        return json.loads((Path(directory) / PARAMETERS_FILE).read_text())
    except (OSError, ValueError):
        return None


class Template(ABC):
    """How to drive one program: inputs, arguments, outputs and error handlers.

    Class attributes
    ----------------
    name : str
        Code name recorded in results (``"espresso"``, ``"lammps"``, ``"vasp"``, ``"cp2k"``).
    calculations : frozenset of str
        Calculation types implemented, among ``"static"``, ``"relax"``, ``"vc-relax"``,
        ``"nscf"``, ``"bands"``, ``"md"``.
    stdout, stderr : str
        File names that receive the program's standard output and error.
    default_binary : tuple of str
        Argv of the program in the default profile.
    install_hint : str
        How to install the program (quoted when it is missing).
    stall_s : float or None
        Seconds without a change of :meth:`output_files` after which the run is taken for
        frozen and killed (:class:`~matdx.codes.monitors.FrozenOutput`); None: never.

    Parameters
    ----------
    handlers
        Error handlers in the order they are consulted; default :meth:`default_handlers`.
    """

    name: ClassVar[str]
    calculations: ClassVar[frozenset[str]]
    stdout: ClassVar[str]
    stderr: ClassVar[str]
    default_binary: ClassVar[tuple[str, ...]]
    install_hint: ClassVar[str] = ""
    stall_s: ClassVar[float | None] = 6 * 3600.0

    def __init__(self, handlers: Sequence[ErrorHandler] | None = None) -> None:
        self.handlers: tuple[ErrorHandler, ...] = (
            self.default_handlers() if handlers is None else tuple(handlers)
        )

    @abstractmethod
    def default_handlers(self) -> tuple[ErrorHandler, ...]:
        """The expert error handlers of this program, most specific first."""

    @abstractmethod
    def write_input(
        self,
        directory: Path,
        atoms: Atoms,
        parameters: Mapping[str, Any],
        calculation: str,
        *,
        profile: Profile | None = None,
    ) -> None:
        """Write every input file into ``directory`` (which exists).

        Never modifies ``atoms`` or ``parameters``. Writes ``parameters.json`` with the complete
        parameters as written. ``profile`` supplies machine paths (pseudopotentials).

        Raises
        ------
        InputError
            For parameters, structures or calculation types the program cannot run.
        """

    @abstractmethod
    def read_results(self, directory: Path) -> CalculationResult:
        """Parse the outputs in ``directory``.

        Raises
        ------
        ReadError
            If an output is missing or truncated, or ends with the program's error message.
        """

    def arguments(self) -> list[str]:
        """Arguments placed after the binary (e.g. ``["-in", "pw.in"]``)."""
        return []

    def environment(self) -> dict[str, str]:
        """Environment defaults this program needs (the profile's variables override them)."""
        return {}

    def profile(self, **kwargs: Any) -> Profile:
        """A :class:`Profile` with this template's default binary; ``kwargs`` as for Profile."""
        kwargs.setdefault("install_hint", self.install_hint)
        return Profile(kwargs.pop("binary", self.default_binary), **kwargs)

    def check_calculation(self, calculation: str) -> None:
        """Raise :class:`UnsupportedCalculation` unless ``calculation`` is implemented."""
        if calculation not in self.calculations:
            raise UnsupportedCalculation(self.name, calculation, self.calculations)

    def output_files(self) -> tuple[str, ...]:
        """Files the generic handlers scan (stdout and stderr by default)."""
        return (self.stdout, self.stderr)

    def monitors(
        self,
        directory: Path,
        parameters: Mapping[str, Any],
        timeout_s: float | None,
        stall_s: float | None,
    ) -> list[Monitor]:
        """Monitors of one run, asked about once a second while it runs (compute side).

        The default watches :meth:`output_files` for a frozen run (``stall_s`` seconds without
        a change; None: the template's :attr:`stall_s`) and adds the program's clean stop
        before ``timeout_s`` (:meth:`clean_stop`). Programs may add more (a diverging SCF).
        """
        stall = self.stall_s if stall_s is None else stall_s
        monitors: list[Monitor] = [FrozenOutput(self.output_files(), stall)] if stall else []
        stop = None if timeout_s is None else self.clean_stop(directory, timeout_s)
        return monitors if stop is None else [*monitors, stop]

    def clean_stop(self, directory: Path, timeout_s: float) -> Monitor | None:
        """The monitor that asks the program to stop by itself before the time limit
        ``timeout_s`` (s) runs out (a stop file it polls), or None: the run is killed at the
        limit. The default: None."""
        return None


def _select(
    template: Template,
    directory: Path,
    parameters: Mapping[str, Any],
    atoms: Atoms,
    applied: Mapping[str, int],
) -> tuple[list[ErrorHandler], ErrorHandler | None, Correction | None, list[str]]:
    """Handlers that detect a failure, the one that corrects it, its correction, notes."""
    detected = [handler for handler in template.handlers if handler.detect(directory)]
    notes: list[str] = []
    for handler in detected:
        used = int(applied.get(handler.name, 0))
        if used >= handler.max_corrections:
            notes.append(f"{handler.name}: budget of {handler.max_corrections} corrections spent")
            continue
        try:
            return detected, handler, handler.correct(directory, parameters, atoms), notes
        except NoCorrection as err:
            notes.append(f"{handler.name}: {err}")
    return detected, None, None, notes


def diagnose(
    template: Template,
    directory: str | Path,
    parameters: Mapping[str, Any],
    atoms: Atoms,
    *,
    applied: Mapping[str, int] | None = None,
) -> Correction | None:
    """The correction for a failed run directory, or None.

    Consults the template's handlers in order and returns the correction of the first one that
    recognises the failure, has budget left and knows a remedy. Only reads files: usable on a
    dead run directory long after the run.

    Parameters
    ----------
    template
        The template that wrote the run directory.
    directory
        The failed run directory.
    parameters
        Code parameters of the failed attempt (not modified).
    atoms
        Input structure of the failed attempt (not modified).
    applied
        How many corrections of each handler (by name) the calculation already received.
    """
    _, _, correction, _ = _select(template, Path(directory), parameters, atoms, applied or {})
    return correction


def explain_failure(
    template: Template,
    directory: str | Path,
    parameters: Mapping[str, Any],
    atoms: Atoms,
    *,
    applied: Mapping[str, int] | None = None,
    result: CalculationResult | None = None,
    read_error: ReadError | None = None,
) -> CalculationFailed:
    """The :class:`CalculationFailed` (not raised) that describes a failed run directory.

    The class is that of the first handler that recognises the failure (e.g. ``SCFError``);
    without one it is ``ReadError`` when the outputs could not be read, ``SCFError`` when the
    result says the SCF did not converge, else ``CalculationFailed``. ``kind`` comes from that
    handler (:meth:`~matdx.codes.handlers.ErrorHandler.kind_of`); without one a timeout or a
    signal makes it ``"infrastructure"``, an unconverged loop ``"numerical"``, anything else
    ``"program"``.

    Parameters
    ----------
    template, directory, parameters, atoms, applied
        As for :func:`diagnose`.
    result
        The parsed (unconverged) result, if the outputs could be read.
    read_error
        The error ``read_results`` raised, if it did.
    """
    directory = Path(directory)
    if result is None and read_error is None:
        try:
            result = template.read_results(directory)
        except ReadError as err:
            read_error = err
    detected, handler, correction, notes = _select(
        template, directory, parameters, atoms, applied or {}
    )
    record: ExecutionRecord | None = read_execution(directory)
    primary = handler or (detected[0] if detected else None)
    names = tuple(h.name for h in detected)
    if primary is not None:
        kind: Kind = primary.kind_of(directory)
        cls: type[CalculationFailed] = primary.error_class
        if correction is not None:
            reason = f"{primary.name}: {correction.description}"
        else:
            reason = "; ".join(notes) or primary.name
    else:
        stopped = record is not None and (
            record.timed_out or record.signal is not None or not record.complete
        )
        kind = "infrastructure" if stopped else "program"
        if read_error is not None:
            cls, reason = ReadError, read_error.reason
            kind = "infrastructure" if stopped else read_error.kind
        elif result is not None and result.scf_converged is False:
            cls, reason = SCFError, "the SCF loop did not converge"
            kind = "numerical"
        elif result is not None and result.ionic_converged is False:
            cls, reason = CalculationFailed, "the ionic relaxation did not converge"
            kind = "numerical"
        else:
            cls = CalculationFailed
            code = None if record is None else record.returncode
            reason = f"{template.name} exited with code {code}"
    if cls is ReadError:
        path = read_error.path if read_error is not None else None
        return ReadError(directory, reason, kind, correction, names, path=path)
    return cls(directory, reason, kind, correction, names)


def run_calculation(
    template: Template,
    profile: Profile,
    directory: str | Path,
    atoms: Atoms,
    parameters: Mapping[str, Any],
    calculation: str,
    ranks: int = 1,
    threads: int = 1,
    timeout_s: float | None = None,
    *,
    applied: Mapping[str, int] | None = None,
    stall_s: float | None = None,
) -> CalculationResult:
    """Write the inputs, run the program, read the results.

    Parameters
    ----------
    template
        The program's template.
    profile
        How to start it on this machine.
    directory
        Run directory; created if missing. A directory that already holds an
        ``execution.json`` is refused (a retry is a new attempt in a new directory).
    atoms
        Input structure (not modified).
    parameters
        Code parameters (not modified).
    calculation
        One of ``template.calculations``.
    ranks, threads
        MPI ranks and OpenMP threads per rank.
    timeout_s
        Wall-clock limit; the program's process group is killed when it is reached.
    applied
        Corrections already applied to this calculation, per handler name (for budgets).
    stall_s
        Seconds without new output after which the run counts as frozen and is killed;
        None: the template's default (:attr:`Template.stall_s`).

    Returns
    -------
    CalculationResult
        Converged result (``result.converged`` is True).

    Raises
    ------
    SetupError
        Before anything runs: unsupported calculation, bad parameters, missing pseudopotential
        (:class:`~matdx.codes.errors.InputError`), missing program
        (:class:`~matdx.codes.errors.ProgramNotFound`).
    CalculationFailed
        After the run: non-zero exit, error message, unconverged SCF (:class:`SCFError`) or
        ionic loop, timeout, missing or truncated output (:class:`ReadError`), or a converged
        run that an after-the-run check refuses (``checks_finished_runs`` handlers). It carries
        the first applicable correction (or None), the reason and the kind.
    """
    template.check_calculation(calculation)
    directory = Path(directory)
    if (directory / EXECUTION_FILE).exists():
        raise InputError(
            f"directory={str(directory)!r} already holds a run ({EXECUTION_FILE}); "
            "use a new directory for each attempt"
        )
    argv = [*profile.command(ranks, threads), *template.arguments()]
    profile.check(ranks)
    directory.mkdir(parents=True, exist_ok=True)
    template.write_input(directory, atoms, parameters, calculation, profile=profile)
    env = profile.env(threads, base={**os.environ, **template.environment()})
    record = execute(
        argv,
        directory,
        env=env,
        stdout=template.stdout,
        stderr=template.stderr,
        timeout_s=timeout_s,
        ranks=ranks,
        threads=threads,
        monitors=template.monitors(directory, parameters, timeout_s, stall_s),
    )
    result: CalculationResult | None = None
    read_error: ReadError | None = None
    try:
        result = template.read_results(directory)
    except ReadError as err:
        read_error = err
    if (
        result is not None
        and result.converged
        and record.returncode == 0
        and not record.timed_out
        and not any(h.checks_finished_runs and h.detect(directory) for h in template.handlers)
    ):
        if result.walltime_s is None:
            result = replace(result, walltime_s=record.walltime_s)
        return result
    raise explain_failure(
        template,
        directory,
        parameters,
        atoms,
        applied=applied,
        result=result,
        read_error=read_error,
    ) from read_error
