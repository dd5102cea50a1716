"""One calculation with a program code, from inside a job: protocol, run, record-ready output.

:func:`run_program` merges the protocol's parameters under the user's, runs the program through
its ``matdx.codes`` template in a subdirectory of the job's run directory, and returns the
job output the harvest turns into a record (structure, energy, forces, stress, method, ...).

When the program fails, the template's error handlers have already looked at the run
directory; :class:`CorrectableFailure` carries what they propose in the form the workflow
engine applies to the job's next attempt (``inputs_update`` merged into the job's keyword
arguments, ``resources_update`` for its resources), with the handler's budget. Recipe jobs
therefore take ``atoms``, ``parameters`` and ``applied`` as keyword arguments.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from matdx.codes.bandgap import gap_value
from matdx.codes.registry import code_info
from matdx.workflows.files import ArtifactFile
from matdx.workflows.run import job_resources
from matdx.workflows.serialization import encode

__all__ = ["CorrectableFailure", "fixed_kpoints", "for_band_gap", "output_of", "program_parameters",
           "record_band_gap", "run_program"]

TEXT = "text/plain"


class CorrectableFailure(RuntimeError):
    """A program run failed; ``correction`` says how the next attempt should differ.

    Attributes
    ----------
    kind
        The failure kind: ``"input"``, ``"numerical"``, ``"resources"``, ``"program"`` or
        ``"infrastructure"`` (see :mod:`matdx.codes.errors`).
    correction
        None, or ``{"handler", "description", "max_corrections", "inputs_update",
        "resources_update"}`` for the engine's recover step.
    """

    def __init__(self, message: str, kind: str, correction: dict[str, Any] | None) -> None:
        super().__init__(message)
        self.kind = kind
        self.correction = correction


def program_parameters(code: str, protocol: str, user: Mapping[str, Any] | None, atoms: Atoms,
                       *, kpoints: bool = True) -> tuple[dict[str, Any], list[str], str | None]:
    """Code parameters for one run: the code's input generator at protocol level ``protocol``
    (:meth:`matdx.codes.inputs.InputGenerator.parameters`), the user's values winning.

    Returns
    -------
    parameters, warnings, pseudo_dir
    """
    inputs = code_info(code).inputs.parameters(protocol, user, atoms, kpoints=kpoints)
    return inputs.parameters, inputs.warnings, inputs.pseudo_dir


def fixed_kpoints(code: str, protocol: str, parameters: Mapping[str, Any] | None,
                  reference: Atoms) -> dict[str, Any]:
    """``parameters`` with the k-point grid fixed to the one their (or the protocol's) density
    gives for ``reference``, so that strained or scaled copies of it (EOS points, elastic
    strains, phonon supercells of one cell) are all computed on the same grid and their
    energies stay comparable (:meth:`matdx.codes.inputs.InputGenerator.fixed_kpoints`)."""
    return code_info(code).inputs.fixed_kpoints(protocol, parameters, reference)


def for_band_gap(code: str, parameters: Mapping[str, Any] | None, band_gap: float | None
                 ) -> dict[str, Any]:
    """``parameters`` for a material in which the recipe's relaxation found ``band_gap`` (eV;
    None when unknown): the code's protocol chooses the occupations, e.g. fixed ones for a
    semiconductor where it smears a metal's
    (:meth:`matdx.codes.inputs.InputGenerator.for_band_gap`)."""
    return code_info(code).inputs.for_band_gap(parameters, band_gap)


def record_band_gap(result: Any) -> float | None:
    """The band gap of a record, eV: matdx's one rule (:func:`matdx.codes.bandgap.gap_value`,
    1 meV tolerance at the Fermi level; 0 for a metal) on the run's eigenvalues, by their
    occupations when the program printed them, else by the Fermi level. None without
    eigenvalues, or when no state or every state is occupied (no empty band computed)."""
    if result.eigenvalues is None:
        return None
    occupations = None if result.occupations is None else np.asarray(result.occupations, float)
    return gap_value(np.asarray(result.eigenvalues, dtype=float), result.fermi_level,
                     occupations)


def output_of(result: Any, directory: Path, protocol: str, warnings: list[str]
              ) -> dict[str, Any]:
    """The job output (and record content) of a program run's :class:`CalculationResult`."""
    output: dict[str, Any] = {
        "structure": result.structure,
        "energy": result.energy,
        "forces": result.forces,
        "stress": result.stress,
        "converged": bool(result.converged),
        "fermi_level": result.fermi_level,
        "band_gap": record_band_gap(result),
        "magnetic_moments": result.magnetic_moments,
        "total_magnetization": result.total_magnetization,
        "volume": float(result.structure.get_volume()) if result.structure.pbc.all() else None,
        "n_scf_steps": result.n_scf_steps,
        "n_ionic_steps": result.n_ionic_steps,
        "code_walltime_s": result.walltime_s,
        "method": code_info(result.code).inputs.method(result, protocol),
        "warnings": [*warnings, *result.warnings],
    }
    if result.eigenvalues is not None:
        output["eigenvalues"] = np.asarray(result.eigenvalues)
        output["kweights"] = None if result.kweights is None else np.asarray(result.kweights)
        output["kpoints"] = None if result.kpoints is None else np.asarray(result.kpoints)
    template = code_info(result.code).template()
    raw = directory / template.stdout
    if raw.is_file():
        output["raw_output"] = ArtifactFile(str(raw), media_type=TEXT)
    if result.trajectory:
        output["trajectory"] = ArtifactFile(str(directory / result.trajectory),
                                            media_type="application/x-h5md")
    return {k: v for k, v in output.items() if v is not None or k in ("energy",)}


def _correction(failure: Any, template: Any, parameters: Mapping[str, Any],
                applied: Mapping[str, int]) -> dict[str, Any] | None:
    correction = failure.correction
    if correction is None:
        return None
    budget = next((h.max_corrections for h in template.handlers
                   if h.name == correction.handler), 1)
    kwargs: dict[str, Any] = {
        "parameters": dict(correction.parameter_updates),
        "applied": {**applied, correction.handler: int(applied.get(correction.handler, 0)) + 1},
    }
    if correction.restart_structure is not None:
        kwargs["atoms"] = encode(correction.restart_structure)
    resources = {key: float(value) for key, value in (correction.resources or {}).items()
                 if isinstance(value, int | float) and math.isfinite(value)}
    return {
        "handler": correction.handler,
        "kind": failure.kind,
        "errors": list(correction.errors),
        "actions": encode(list(correction.actions)),
        "description": correction.description,
        "max_corrections": int(budget),
        "inputs_update": {"kwargs": kwargs},
        "resources_update": resources,
    }


def run_program(atoms: Atoms, code: str, calculation: str,
                parameters: Mapping[str, Any] | None = None, *, protocol: str = "moderate",
                applied: Mapping[str, int] | None = None, directory: str | Path = "calc",
                ranks: int | None = None, timeout_s: float | None = None) -> dict[str, Any]:
    """Run one calculation with a program code in ``directory`` (relative to the job's run
    directory) and return the job output.

    ``ranks`` MPI ranks (default: the job's ``cores`` resource, see
    :func:`matdx.workflows.run.job_resources`); ``timeout_s`` wall-clock limit of the program, s.

    Raises
    ------
    CorrectableFailure
        When the run failed, with the error handlers' correction for the next attempt.
    matdx.codes.errors.SetupError
        Before running: bad parameters, missing pseudopotential or program.
    """
    from matdx.codes.base import run_calculation
    from matdx.codes.errors import CalculationFailed

    info = code_info(code)
    if ranks is None:  # the job's cores, which an out-of-memory correction may have halved
        ranks = max(1, int(job_resources().get("cores", 1)))
    full, warnings, pseudo_dir = program_parameters(code, protocol, parameters, atoms)
    template = info.template()
    profile = template.profile(pseudo_dir=pseudo_dir) if pseudo_dir else template.profile()
    directory = Path(directory)
    try:
        result = run_calculation(template, profile, directory, atoms, full, calculation,
                                 ranks=ranks, timeout_s=timeout_s, applied=dict(applied or {}))
    except CalculationFailed as failure:
        raise CorrectableFailure(
            f"{code} {calculation} failed: {failure.reason}", failure.kind,
            _correction(failure, template, full, dict(applied or {})),
        ) from failure
    return output_of(result, directory, protocol, warnings)
