"""What a run directory shows: parsed outcome, every error with its kind, the next correction.

:func:`diagnose_run` reads any run directory of a program (one matdx wrote, or one a user ran
by hand) and only reads it. It is what ``matdx diagnose DIR --code CODE`` prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matdx.codes.base import Template, read_parameters_record
from matdx.codes.errors import CodeError, NoCorrection, ReadError
from matdx.codes.results import CalculationResult

__all__ = ["SUMMARY_FIELDS", "diagnose_run"]

SUMMARY_FIELDS = (
    "calculation", "converged", "scf_converged", "ionic_converged", "energy", "fermi_level",
    "band_gap", "total_magnetization", "n_scf_steps", "n_ionic_steps", "walltime_s",
    "code_version", "warnings",
)
"""Result fields shown in ``results`` (units of :class:`CalculationResult`: eV, s)."""


def _summary(result: CalculationResult) -> dict[str, Any]:
    data = result.to_dict()
    summary = {name: data[name] for name in SUMMARY_FIELDS}
    summary["natoms"] = len(result.structure)
    return summary


def diagnose_run(template: Template, directory: str | Path) -> dict[str, Any]:
    """The diagnosis of ``directory`` as plain JSON values.

    Returns
    -------
    dict
        ``{"code", "directory", "completed", "errors": [{"name", "kind", "message"}],
        "correction": {...} or None, "results": {...}}``. ``completed`` says whether the
        program finished its output (it may still have failed: see ``errors``); ``results``
        holds the parsed outcome (energy in eV) or, when the output could not be read,
        ``{"read_error": reason}``; ``errors`` lists every handler that recognises a failure,
        in the template's order, with its failure kind; ``correction`` is what the next
        attempt would get from the first handler that has one (handler, errors, actions,
        parameter updates, resources).

    Raises
    ------
    FileNotFoundError
        If ``directory`` is not a directory.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"DIR: {directory} is not a directory")
    result: CalculationResult | None = None
    try:
        result = template.read_results(directory)
        results: dict[str, Any] = _summary(result)
    except ReadError as err:
        results = {"read_error": err.reason}
    record = read_parameters_record(directory) or {}
    parameters = dict(record.get("parameters") or {})
    atoms = result.structure if result is not None else None
    errors = []
    correction = None
    for handler in template.handlers:
        if not handler.detect(directory):
            continue
        try:
            proposed = handler.correct(directory, parameters, atoms)
            message = proposed.description
            correction = correction or proposed
        except NoCorrection as err:
            message = f"no correction: {err}"
        except (CodeError, OSError, ValueError, TypeError, AttributeError) as err:
            # a hand-run directory may lack what the handler needs (parameters, structure)
            message = f"recognised; no correction without the run's inputs ({err})"
        errors.append({"name": handler.name, "kind": handler.kind_of(directory),
                       "message": message})
    return {
        "code": template.name,
        "directory": str(directory),
        "completed": result is not None,
        "errors": errors,
        "correction": None if correction is None else correction.to_dict(),
        "results": results,
    }
