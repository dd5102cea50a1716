"""OPTIMADE JSON Lines: structures with their calculated properties, for OPTIMADE servers and
clients.

File layout (the OPTIMADE JSON Lines convention for database exchange):

1. a header ``{"x-optimade": {"api_version": "1.2.0"}}``;
2. one ``info`` line defining the provider fields of ``structures`` (all prefixed ``_matdx_``,
   with description and unit);
3. one line per structure: ``{"type": "structures", "id": <record id>, "attributes": {...}}``
   with the OPTIMADE structure fields of the record and its results under ``_matdx_``.

Records without a structure are left out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC
from pathlib import Path
from typing import Any

from matdx.store.exporting import ExportedRecord

__all__ = ["API_VERSION", "PROVIDER_FIELDS", "info_line", "optimade_entry", "write_optimade_jsonl"]

API_VERSION = "1.2.0"
PREFIX = "_matdx_"

# Provider fields: name -> (OPTIMADE type, unit or None, description).
PROVIDER_FIELDS: dict[str, tuple[str, str | None, str]] = {
    "schema_version": ("integer", None, "matdx record schema version"),
    "campaign_id": ("string", None, "campaign that computed the record"),
    "input_hash": ("string", None, "sha256 of the job's function and resolved inputs"),
    "structure_hash": ("string", None, "sha256 of lattice and wrapped positions (1e-5)"),
    "license": ("string", None, "SPDX license expression of the record"),
    "code": ("string", None, "simulation code"),
    "code_version": ("string", None, "version of the simulation code"),
    "calculation": ("string", None, "calculation type: static, relax, md, eos-fit, ..."),
    "functional": ("string", None, "exchange-correlation functional or potential"),
    "potential": ("string", None, "interatomic potential: pair style and potential files"),
    "protocol": ("string", None, "accuracy protocol of the code's defaults"),
    "pseudopotentials": ("list", None, "pseudopotentials and potential files: name, sha256"),
    "method": ("string", None, "code | functional | potential | protocol, in one line"),
    "energy": ("float", "eV", "total energy"),
    "energy_per_atom": ("float", "eV", "total energy per atom"),
    "forces": ("list", "eV/Å", "forces on the sites, (nsites, 3)"),
    "stress": (
        "list",
        "eV/Å^3",
        "stress tensor (3, 3), ASE sign convention: negative under compression",
    ),
    "magnetic_moments": ("list", "μB", "magnetic moment per site"),
    "total_magnetization": ("float", "μB", "magnetization of the cell"),
    "band_gap": ("float", "eV", "band gap"),
    "fermi_level": ("float", "eV", "Fermi level"),
    "converged": ("boolean", None, "the calculation converged"),
    "properties": ("dictionary", None, "other scalar results; units are in their names"),
}

_STRUCTURE_FIELDS = (
    "elements",
    "nelements",
    "elements_ratios",
    "chemical_formula_reduced",
    "chemical_formula_hill",
    "chemical_formula_anonymous",
    "dimension_types",
    "nperiodic_dimensions",
    "cartesian_site_positions",
    "nsites",
    "species",
    "species_at_sites",
)


def _lattice(system: Any) -> list[list[float] | list[None]]:
    """Lattice vectors, with null vectors along non-periodic directions without a cell."""
    vectors: list[list[float] | list[None]] = []
    for periodic, vector in zip(system.dimension_types, system.lattice_vectors, strict=True):
        empty = not periodic and all(abs(x) < 1e-12 for x in vector)
        vectors.append([None, None, None] if empty else list(vector))
    return vectors


def optimade_entry(exported: ExportedRecord) -> dict[str, Any] | None:
    """The OPTIMADE ``structures`` entry of a record, or None if it has no structure."""
    record = exported.record
    system = record.system
    if system is None:
        return None
    results, method = record.results, record.method
    attributes: dict[str, Any] = {name: getattr(system, name) for name in _STRUCTURE_FIELDS}
    attributes.update(
        lattice_vectors=_lattice(system),
        structure_features=[],
        last_modified=exported.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        immutable_id=record.record_id,
    )
    provider = {
        "schema_version": record.schema_version,
        "campaign_id": record.campaign_id,
        "input_hash": record.input_hash,
        "structure_hash": system.structure_hash,
        "license": record.governance.license,
        "code": method.code,
        "code_version": method.code_version,
        "calculation": method.calculation,
        "functional": method.functional,
        "potential": method.potential,
        "protocol": method.protocol,
        "pseudopotentials": method.pseudopotentials or None,
        "method": method.label or None,
        "energy": results.energy,
        "energy_per_atom": results.energy_per_atom,
        "forces": results.forces,
        "stress": results.stress,
        "magnetic_moments": results.magnetic_moments,
        "total_magnetization": results.total_magnetization,
        "band_gap": results.band_gap,
        "fermi_level": results.fermi_level,
        "converged": results.converged,
        "properties": results.properties or None,
    }
    attributes.update({PREFIX + key: value for key, value in provider.items() if value is not None})
    return {"type": "structures", "id": record.record_id, "attributes": attributes}


def info_line() -> dict[str, Any]:
    """The first line of an OPTIMADE JSON Lines file: the ``info`` entry of ``structures``
    with matdx's own properties described."""
    return {
        "type": "info",
        "id": "structures",
        "properties": {
            PREFIX + name: {
                "title": name.replace("_", " "),
                "description": description,
                "x-optimade-type": kind,
                **({"x-optimade-unit": unit} if unit else {}),
            }
            for name, (kind, unit, description) in PROVIDER_FIELDS.items()
        },
    }


def write_optimade_jsonl(records: Iterable[ExportedRecord], path: str | Path) -> int:
    """Write the records with a structure as OPTIMADE JSON Lines; returns how many."""
    written = 0
    target = Path(path)
    partial = target.with_name(f".{target.name}.partial")
    with partial.open("w", encoding="utf-8") as out:
        out.write(json.dumps({"x-optimade": {"api_version": API_VERSION}}) + "\n")
        out.write(json.dumps(info_line(), ensure_ascii=False) + "\n")
        for exported in records:
            entry = optimade_entry(exported)
            if entry is not None:
                out.write(json.dumps(entry, ensure_ascii=False) + "\n")
                written += 1
    partial.replace(target)
    return written
