"""Custodian's error handlers in matdx's model: detect on a run directory, correct declaratively.

`custodian <https://github.com/materialsproject/custodian>`_ (the Materials Project's
error-recovery library) knows the failures of VASP and CP2K. Its handlers read a run directory
(``check``) and then rewrite the input files in place (``correct``), returning the errors found
and the actions taken as declarative dicts (``{"dict": "INCAR", "action": {"_set": {...}}}``).

matdx never lets a handler touch a run directory: a failed attempt is kept as it is, and the
next attempt is a new directory. :class:`CustodianHandler` therefore runs custodian's handler
on a scratch copy of the run directory, and turns what it wrote there into a
:class:`~matdx.codes.handlers.Correction`: the code module's ``translate`` compares the input
files custodian rewrote with the originals and returns the parameter updates (and restart
structure) that make the next attempt's generated inputs equal to custodian's. The correction
keeps custodian's error names and actions verbatim, so the run's provenance names the handler,
the errors and the actions.

Custodian's handlers count their own corrections (``error_count``) to escalate; a matdx
handler is made fresh for every diagnosis, and escalates instead from the inputs it reads (the
corrected inputs of the previous attempt), as custodian's handlers mostly do themselves.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ase import Atoms

from matdx.codes.errors import CalculationFailed, Kind, NoCorrection
from matdx.codes.handlers import Correction, ErrorHandler

__all__ = [
    "LINK_ABOVE_BYTES",
    "CustodianHandler",
    "CustodianValidator",
    "Diagnosis",
    "Translation",
    "scratch_copy",
]

LINK_ABOVE_BYTES = 50 * 1024**2
"""Files larger than this (wavefunctions, charge densities) are linked, not copied, into the
scratch copy; custodian's handlers only read or delete them."""


@dataclass(frozen=True)
class Diagnosis:
    """What a custodian handler found and did on a scratch copy of a run directory.

    Attributes
    ----------
    errors : tuple of str
        Custodian's error names (e.g. ``("ksymm",)``).
    actions : tuple of dict
        Custodian's actions, verbatim.
    """

    errors: tuple[str, ...]
    actions: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class Translation:
    """The next attempt's change, in matdx's terms, equivalent to custodian's rewritten files.

    Attributes
    ----------
    parameter_updates : dict
        Updates for the code parameters (see :func:`~matdx.codes.handlers.deep_merge`).
    restart_structure : ase.Atoms or None
        Structure for the next attempt when custodian changed the POSCAR (or coordinates).
    notes : tuple of str
        Actions with no input change in a fresh directory (e.g. deleting a WAVECAR).
    """

    parameter_updates: dict[str, Any]
    restart_structure: Atoms | None = None
    notes: tuple[str, ...] = ()


Translate = Callable[[Path, Path, Diagnosis], Translation]
"""``translate(run_directory, corrected_copy, diagnosis)`` of a code module."""


@contextmanager
def scratch_copy(directory: str | Path) -> Iterator[Path]:
    """A temporary copy of ``directory`` (files and subfolders), removed on exit.

    Files larger than :data:`LINK_ABOVE_BYTES` are symbolic links to the originals.
    """
    directory = Path(directory)
    with tempfile.TemporaryDirectory(prefix="matdx-custodian-") as tmp:
        scratch = Path(tmp) / "run"
        scratch.mkdir()
        for source in directory.iterdir():
            target = scratch / source.name
            if source.is_dir():
                shutil.copytree(source, target, symlinks=True)
            elif source.is_file():
                if source.stat().st_size > LINK_ABOVE_BYTES:
                    os.symlink(source.resolve(), target)
                else:
                    shutil.copy2(source, target)
        yield scratch


class CustodianHandler(ErrorHandler):
    """One custodian handler, run on scratch copies, correcting through a code's translator.

    Parameters
    ----------
    make
        Makes a fresh custodian handler (e.g. ``lambda: VaspErrorHandler("vasp.out")``).
    name
        matdx name of the handler, recorded with its corrections (``"custodian.vasp_errors"``).
    kind
        Failure kind of what the handler finds, unless ``error_kinds`` names the error.
    translate
        The code's translator of custodian's rewritten input files.
    error_kinds
        Failure kind per custodian error name, for handlers that find several kinds.
    error_class
        :class:`CalculationFailed` subclass raised when this handler explains a failure.
    found
        Further condition on the custodian handler after a positive ``check`` (e.g. that
        CP2K's frozen job was stuck in the preconditioner), or None.
    when
        Condition on the run directory for consulting the handler at all (e.g. not after the
        program stopped cleanly at a stop file's request, which leaves an unconverged loop
        that is no convergence failure), or None.
    max_corrections
        Budget of this handler per calculation (default 5).
    checks_finished_runs
        True for handlers custodian runs after a finished job (smearing, k-spacing of a metal):
        consulted also when the run says converged.
    """

    default_max_corrections = 5

    def __init__(
        self,
        make: Callable[[], Any],
        name: str,
        kind: Kind,
        translate: Translate,
        *,
        error_kinds: Mapping[str, Kind] | None = None,
        error_class: type[CalculationFailed] = CalculationFailed,
        found: Callable[[Any], bool] | None = None,
        when: Callable[[Path], bool] | None = None,
        max_corrections: int | None = None,
        checks_finished_runs: bool = False,
    ) -> None:
        super().__init__(max_corrections)
        self.checks_finished_runs = checks_finished_runs  # type: ignore[misc]
        self.make = make
        self.name = name  # type: ignore[misc]
        self.kind = kind  # type: ignore[misc]
        self.translate = translate
        self.error_kinds = dict(error_kinds or {})
        self.error_class = error_class  # type: ignore[misc]
        self.found = found
        self.when = when

    def _run(self, directory: Path, correct: bool) -> tuple[Diagnosis, Translation | None] | None:
        directory = Path(directory)
        if not directory.is_dir() or (self.when is not None and not self.when(directory)):
            return None
        quiet = logging.getLogger("custodian")
        level = quiet.level
        with scratch_copy(directory) as scratch, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quiet.setLevel(logging.CRITICAL)  # custodian logs every error it finds
            try:
                return self._check_and_correct(directory, scratch, correct)
            finally:
                quiet.setLevel(level)

    def _check_and_correct(self, directory: Path, scratch: Path, correct: bool
                           ) -> tuple[Diagnosis, Translation | None] | None:
        """custodian's check (and correct) on ``scratch``, a copy of ``directory``."""
        handler = self.make()
        try:
            found = handler.check(str(scratch))
        except (OSError, ValueError, KeyError, IndexError, AttributeError):
            return None  # the files this handler reads are missing or unreadable
        if not found or (self.found is not None and not self.found(handler)):
            return None
        if not correct:
            errors = getattr(handler, "errors", None) or ()
            return Diagnosis(tuple(sorted(map(str, errors))), ()), None
        try:
            outcome = handler.correct(str(scratch)) or {}
        except (OSError, ValueError, KeyError, IndexError, AttributeError) as err:
            raise NoCorrection(
                f"{self.name}: custodian found {sorted(getattr(handler, 'errors', ()))} "
                f"but its correction failed ({type(err).__name__}: {err})"
            ) from err
        diagnosis = Diagnosis(
            tuple(str(e) for e in outcome.get("errors") or ()),
            tuple(dict(a) for a in outcome.get("actions") or ()),
        )
        return diagnosis, self.translate(directory, scratch, diagnosis)

    def diagnose(self, directory: Path) -> Diagnosis | None:
        """Custodian's errors and actions for ``directory`` (None when it finds nothing)."""
        found = self._run(directory, correct=True)
        return None if found is None else found[0]

    def detect(self, directory: Path) -> bool:
        return self._run(directory, correct=False) is not None

    def kind_of(self, directory: Path) -> Kind:
        found = self._run(directory, correct=False)
        errors = () if found is None else found[0].errors
        kinds = [self.error_kinds[e] for e in errors if e in self.error_kinds]
        return kinds[0] if kinds else self.kind

    def correct(
        self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms
    ) -> Correction:
        found = self._run(directory, correct=True)
        if found is None:
            raise NoCorrection(f"{self.name}: custodian found nothing to correct")
        diagnosis, translation = found
        if translation is None or not diagnosis.actions:
            raise NoCorrection(
                f"{self.name}: custodian found {list(diagnosis.errors)} but has no action "
                "left for them"
            )
        changes = []
        for action in diagnosis.actions:
            target = action.get("dict") or action.get("file")
            changes.append(f"{target}: {action.get('action')}")
        notes = f" ({'; '.join(translation.notes)})" if translation.notes else ""
        return Correction(
            handler=self.name,
            description=f"custodian found {', '.join(diagnosis.errors)}; "
                        f"{'; '.join(changes)}{notes}",
            parameter_updates=translation.parameter_updates,
            restart_structure=translation.restart_structure,
            errors=diagnosis.errors,
            actions=diagnosis.actions,
        )

    def __repr__(self) -> str:
        return f"CustodianHandler({self.name!r}, max_corrections={self.max_corrections})"


class CustodianValidator(ErrorHandler):
    """One custodian validator: an after-the-run check that a finished run's outputs are
    whole and usable (``check`` True means they are not).

    Validators only read the run directory, so they run on it directly. They know no
    correction: the attempt is refused and rerun within its kind's budget.

    Parameters
    ----------
    make
        Makes the custodian validator (e.g. ``VasprunXMLValidator``).
    name
        matdx name (``"custodian.VasprunXMLValidator"``).
    kind
        Failure kind of an invalid output (a torn ``vasprun.xml`` is ``"infrastructure"``).
    requires
        Files that must exist for the validator to apply (e.g. ``AECCAR0``), or empty.
    finished
        Whether the program says it finished in a directory (e.g. VASP's timing summary at the
        end of OUTCAR): a validator judges only finished runs, the handlers explain the rest.
    """

    default_max_corrections = 0
    checks_finished_runs = True

    def __init__(self, make: Callable[[], Any], name: str, kind: Kind,
                 finished: Callable[[Path], bool], requires: tuple[str, ...] = ()) -> None:
        super().__init__(0)
        self.make = make
        self.name = name  # type: ignore[misc]
        self.kind = kind  # type: ignore[misc]
        self.finished = finished
        self.requires = tuple(requires)

    def detect(self, directory: Path) -> bool:
        directory = Path(directory)
        if not directory.is_dir() or not all((directory / f).is_file() for f in self.requires):
            return False
        if not self.finished(directory):
            return False
        quiet = logging.getLogger("custodian")
        level = quiet.level
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quiet.setLevel(logging.CRITICAL)
            try:
                return bool(self.make().check(str(directory)))
            except (OSError, ValueError, KeyError, IndexError, AttributeError):
                return True  # the files the validator needs could not be read
            finally:
                quiet.setLevel(level)

    def correct(
        self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms
    ) -> Correction:
        raise NoCorrection(f"{self.name}: the outputs are invalid; the attempt is not accepted")

    def __repr__(self) -> str:
        return f"CustodianValidator({self.name!r})"
