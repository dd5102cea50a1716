"""Build calculation records from what a job attempt left in its run directory.

A job's output is a dict; keys with a known meaning fill the record's sections:

=====================================  ===================================================
``structure`` (Atoms / Structure)      ``system`` (else the first structure in the inputs)
``energy`` (eV), ``forces`` (eV/Å),    ``results``, same names and units
``stress`` (eV/Å³, ASE sign),
``magnetic_moments``, ``band_gap``,
``fermi_level``, ``converged``,
``total_magnetization``, ``md``
``method`` (dict)                      ``method`` (code, code_version, calculation, ...)
``data`` (dict with ``kind``)          ``results.data``, a recipe's arrays
                                       (:mod:`matdx.store.result_models`)
other scalars (numbers, str, bool)     ``results.properties``
=====================================  ===================================================
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import numpy as np

from matdx.store.records import (
    STRESS_CONVENTION,
    ArtifactReference,
    CalculationRecord,
    Governance,
    Method,
    Results,
    Run,
    System,
    method_identity,
    potential_of,
)
from matdx.store.system import optimade_structure
from matdx.workflows.serialization import JSON, decode

__all__ = ["build_record", "matdx_version", "method_identity", "potential_of", "system_of"]

_RESULT_ARRAYS = ("forces", "stress", "magnetic_moments")
_RESULT_SCALARS = ("band_gap", "fermi_level", "converged", "total_magnetization")
_RESERVED = {"structure", "atoms", "energy", "method", "md", "warnings", "data",
             *_RESULT_ARRAYS, *_RESULT_SCALARS}


@functools.cache
def matdx_version() -> str:
    try:
        return metadata.version("matdx")
    except metadata.PackageNotFoundError:
        return "unknown"


def _is_structure(value: Any) -> bool:
    return isinstance(value, dict) and (
        "@atoms" in value or ("@module" in value and value.get("@class") == "Structure")
    )


def _first_structure(data: JSON) -> JSON | None:
    if _is_structure(data):
        return data
    values = data.values() if isinstance(data, dict) else data if isinstance(data, list) else ()
    for value in values:
        found = _first_structure(value)
        if found is not None:
            return found
    return None


def system_of(encoded: JSON) -> System:
    """The system section of an encoded ``ase.Atoms`` or pymatgen ``Structure``."""
    if "@atoms" in encoded:
        from ase.data import chemical_symbols

        payload = encoded["@atoms"]
        symbols = [chemical_symbols[z] for z in payload["numbers"]]
        fields = optimade_structure(payload["cell"], payload["positions"], symbols, payload["pbc"])
    else:
        structure = decode(encoded)
        fields = optimade_structure(
            structure.lattice.matrix,
            structure.cart_coords,
            [site.specie.symbol for site in structure],
            structure.lattice.pbc,
        )
    return System(**fields)


def _as_list(encoded: JSON) -> Any:
    value = decode(encoded)
    return np.asarray(value, dtype=float).tolist() if value is not None else None


def _plain(value: Any) -> Any:
    """``value`` with numpy arrays and scalars as lists and Python numbers."""
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _results(output: JSON, nsites: int | None) -> Results:
    if not isinstance(output, dict):
        return Results()
    values: dict[str, Any] = {}
    energy = decode(output.get("energy"))
    if isinstance(energy, int | float):
        values["energy"] = float(energy)
        if nsites:
            values["energy_per_atom"] = float(energy) / nsites
    for key in _RESULT_ARRAYS:
        if output.get(key) is not None:
            values[key] = _as_list(output[key])
    if "stress" in values:
        values["stress_convention"] = STRESS_CONVENTION
    for key in _RESULT_SCALARS:
        if output.get(key) is not None:
            values[key] = decode(output[key])
    if isinstance(output.get("md"), dict):
        values["md"] = decode(output["md"])
    if isinstance(output.get("data"), dict):
        values["data"] = _plain(decode(output["data"]))
    values["properties"] = {
        key: value
        for key, value in output.items()
        if key not in _RESERVED and isinstance(value, int | float | str | bool)
    }
    return Results(**values)


def _method(section: dict[str, Any]) -> Method:
    """The method section, with the potential and protocol named from what it lists when the
    code did not name them."""
    section = dict(section)
    if section.get("potential") is None:
        section["potential"] = potential_of(section)
    if section.get("protocol") is None:
        section["protocol"] = (section.get("parameters") or {}).get("protocol")
    return Method(**section)


def _timestamp(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def build_record(
    *,
    record_id: str,
    job: Any,
    campaign: Any,
    result: dict[str, Any],
    inputs: JSON,
    artifacts: list[ArtifactReference],
    parents: list[str],
    retry_of: str | None,
    corrections: list[dict[str, Any]],
    batch_id: str | None,
    scheduler_job_id: str | None,
    run_dir: str | None,
) -> CalculationRecord:
    """Assemble and validate the record of one attempt.

    Parameters
    ----------
    job, campaign
        Rows of the job and its campaign (ids, name, function, governance defaults).
    result
        The attempt's ``result.json``.
    inputs
        The attempt's resolved, encoded inputs (for the system when the output has none).
    """
    output = result.get("output")
    structure = None
    if isinstance(output, dict):
        structure = next(
            (output[k] for k in ("structure", "atoms") if _is_structure(output.get(k))), None
        )
    structure = structure or _first_structure(inputs)
    system = system_of(structure) if structure is not None else None
    method = Method()
    if isinstance(output, dict) and isinstance(output.get("method"), dict):
        method = _method(decode(output["method"]))
    started, finished = result.get("started_at"), result.get("finished_at")
    error = result.get("error")
    return CalculationRecord(
        record_id=record_id,
        input_hash=result.get("input_hash"),
        campaign_id=job.campaign_id,
        workflow_id=job.workflow_id,
        job_id=job.id,
        job_name=job.name,
        function=job.function,
        attempt=result["attempt"],
        tags=list(campaign.tags or []),
        parents=parents,
        retry_of=retry_of,
        system=system,
        method=method,
        results=_results(output, system.nsites if system else None),
        artifacts=artifacts,
        run=Run(
            status=result["status"],
            matdx_version=result.get("versions", {}).get("matdx", matdx_version()),
            versions=result.get("versions", {}),
            host=result.get("host", ""),
            scheduler_job_id=scheduler_job_id,
            batch_id=batch_id,
            run_dir=run_dir,
            started_at=_timestamp(started),
            finished_at=_timestamp(finished),
            walltime_s=(finished - started) if started and finished else None,
            corrections=corrections,
            warnings=[str(w) for w in (output or {}).get("warnings", [])]
            if isinstance(output, dict) and isinstance(output.get("warnings"), list) else [],
            error=None
            if error is None
            else {k: error.get(k) for k in ("type", "message", "last_line", "kind")},
        ),
        governance=Governance(
            owner=campaign.owner,
            project=campaign.project,
            access=campaign.access,
            embargo_until=getattr(campaign, "embargo_until", None),
            license=campaign.license or None,
            export_control=bool(getattr(campaign, "export_control", False)),
        ),
    )
