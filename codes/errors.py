"""The error tree of the code adapters.

Two families, split by *when* they happen:

* **setup errors**, raised before a program starts (nothing has run, nothing is lost):
  :class:`SetupError` → :class:`InputError` (bad parameters, structure or calculation type;
  :class:`PseudopotentialNotFound`, :class:`UnsupportedCalculation`) and
  :class:`ProgramNotFound` (the binary or the MPI launcher is not installed);
* **failures**, raised after a program ran: :class:`CalculationFailed` and its subclasses
  :class:`SCFError` (the electronic self-consistency loop did not converge) and
  :class:`ReadError` (an output file is missing or truncated, or the program stopped with an
  error message before finishing it).

A :class:`CalculationFailed` carries what the error handlers concluded: the ``reason``, the
failure :data:`Kind` and the :class:`~matdx.codes.handlers.Correction` to apply to the next
attempt, if one is known. The kinds:

``"input"``
    the science setup (smearing for a metal, symmetry tolerance, bands, k-mesh);
``"numerical"``
    convergence (SCF, ionic loop, a matrix not positive definite);
``"resources"``
    memory, walltime, ranks;
``"program"``
    a crash or bug no handler explains;
``"infrastructure"``
    node, filesystem, scheduler (the process was killed or never finished).

The workflow engine gives each kind its own retry budget (``matdx.workflows.failures``; the
two lists of kind strings are checked to be equal by the tests).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    from matdx.codes.handlers import Correction

__all__ = [
    "KINDS",
    "CalculationFailed",
    "CodeError",
    "InputError",
    "Kind",
    "NoCorrection",
    "ProgramNotFound",
    "PseudopotentialNotFound",
    "ReadError",
    "SCFError",
    "SetupError",
    "UnsupportedCalculation",
]

Kind = Literal["input", "numerical", "resources", "program", "infrastructure"]
KINDS: tuple[str, ...] = ("input", "numerical", "resources", "program", "infrastructure")


class CodeError(Exception):
    """Base class of every error raised by :mod:`matdx.codes`."""


class SetupError(CodeError):
    """Raised before a program starts: nothing ran, no output exists."""


class InputError(SetupError, ValueError):
    """Bad parameters, structure or calculation type, found before anything is written or run.

    Its failure ``kind`` is ``"input"``: the workflow engine never reruns it unchanged (the same
    inputs fail the same way), whatever the job's own ``retries``.
    """

    kind: ClassVar[Kind] = "input"


class UnsupportedCalculation(InputError):
    """A template was asked for a calculation type it does not implement.

    Parameters
    ----------
    code
        Template name, e.g. ``"espresso"``.
    calculation
        The requested calculation type.
    supported
        The calculation types the template implements.
    """

    def __init__(self, code: str, calculation: str, supported: frozenset[str] | set[str]) -> None:
        self.code = code
        self.calculation = calculation
        self.supported = frozenset(supported)
        super().__init__(
            f"calculation={calculation!r} is not supported by {code}; "
            f"accepted: {sorted(self.supported)}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.code, self.calculation, self.supported))


class PseudopotentialNotFound(InputError):
    """No pseudopotential file for an element in the pseudopotential library.

    Parameters
    ----------
    element
        Chemical symbol, e.g. ``"Zr"``.
    directory
        The directory that was searched.
    detail
        What was looked for (a file name, or the functional and file types accepted).
    """

    def __init__(self, element: str, directory: str | Path, detail: str = "") -> None:
        self.element = element
        self.directory = str(directory)
        self.detail = detail
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"no pseudopotential for element {element!r} in {self.directory}{extra}; "
            "add a UPF file for it or name one explicitly in parameters['pseudopotentials']"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.element, self.directory, self.detail))


class ProgramNotFound(SetupError):
    """The program binary (or the MPI launcher) is not on ``PATH``.

    Parameters
    ----------
    program
        The executable that was looked for.
    hint
        How to install it, e.g. ``"apt-get install quantum-espresso"``.
    """

    def __init__(self, program: str, hint: str = "") -> None:
        self.program = program
        self.hint = hint
        extra = f"; install it with: {hint}" if hint else ""
        super().__init__(f"program {program!r} not found on PATH{extra}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.program, self.hint))


class CalculationFailed(CodeError):
    """A program ran and did not produce a usable, converged result.

    Parameters
    ----------
    directory
        The run directory; it is left untouched for inspection and for
        :func:`~matdx.codes.base.diagnose`.
    reason
        Human-readable cause, e.g. ``"scf_unconverged: convergence NOT achieved after 3
        iterations"``.
    kind
        One of :data:`KINDS` (see the module docstring).
    correction
        The first applicable correction found by the template's error handlers, or ``None``
        when no handler knows a fix (or their correction budgets are spent).
    handlers
        Names of the error handlers that recognised the failure, in template order.

    Raises
    ------
    ValueError
        If ``kind`` is not one of :data:`KINDS`.
    """

    def __init__(
        self,
        directory: str | Path,
        reason: str,
        kind: Kind = "program",
        correction: Correction | None = None,
        handlers: tuple[str, ...] = (),
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r}; accepted: {list(KINDS)}")
        self.directory = Path(directory)
        self.reason = reason
        self.kind: Kind = kind
        self.correction = correction
        self.handlers = tuple(handlers)
        super().__init__(f"{reason} [{kind}] in {self.directory}")

    def __reduce__(self) -> tuple[Any, ...]:
        args = (self.directory, self.reason, self.kind, self.correction, self.handlers)
        return (type(self), args)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary: directory, reason, kind, handlers and the correction."""
        return {
            "error": type(self).__name__,
            "directory": str(self.directory),
            "reason": self.reason,
            "kind": self.kind,
            "handlers": list(self.handlers),
            "correction": None if self.correction is None else self.correction.to_dict(),
        }


class SCFError(CalculationFailed):
    """The electronic self-consistency loop did not converge (within its step limit)."""


class ReadError(CalculationFailed):
    """An output file is missing, truncated, or ends with the program's own error message.

    ``read_results`` of every template raises this when the output does not show that the
    program finished (for example no ``JOB DONE`` in a ``pw.x`` output, no ``Total wall time``
    in a LAMMPS log, no ``PROGRAM ENDED`` in a CP2K output, an unterminated ``vasprun.xml``).
    Raised by ``read_results`` alone its ``kind`` is ``"infrastructure"``, because an
    unfinished output usually means the process was killed; :func:`~matdx.codes.base.
    run_calculation` replaces it with the diagnosis of the error handlers when one applies.

    Parameters
    ----------
    directory
        The run directory.
    reason
        What is missing or where the output stops.
    path
        The file that could not be read, if one is to blame.
    kind, correction, handlers
        As for :class:`CalculationFailed`.
    """

    def __init__(
        self,
        directory: str | Path,
        reason: str,
        kind: Kind = "infrastructure",
        correction: Correction | None = None,
        handlers: tuple[str, ...] = (),
        path: str | Path | None = None,
    ) -> None:
        super().__init__(directory, reason, kind, correction, handlers)
        self.path = None if path is None else Path(path)

    def __reduce__(self) -> tuple[Any, ...]:
        args = (self.directory, self.reason, self.kind, self.correction, self.handlers, self.path)
        return (type(self), args)


class NoCorrection(CodeError):
    """Raised by :meth:`ErrorHandler.correct` when it recognises a failure but knows no fix.

    For example the ladder of SCF remedies is used up, or an S-matrix failure comes from atoms
    that overlap, which no parameter can repair. The message says why.
    """
