"""An ASE database (``ase.db``, SQLite file) of the records' final configurations.

Each row holds the structure with a single-point calculator carrying the record's energy (eV),
forces (eV/Å) and stress (Voigt order xx yy zz yz xz xy, eV/Å³, ASE's sign convention), so
``row.toatoms().get_potential_energy()`` works as for any ASE database. Key-value pairs:
``record_id``, ``code``, ``functional``, ``potential``, ``protocol``, ``method`` (one line
of the four), ``calculation``, ``campaign_id``, ``license`` and the numeric
scalar results (``band_gap``, ``energy_per_atom``, ...; names of ``results.properties`` keep
their units); ``data`` holds the record's whole ``results`` section.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from matdx.store.exporting import ExportedRecord

__all__ = ["write_ase_db"]

# ase.db keys must be identifiers and must not clash with its reserved names.
_RESERVED = {
    "id",
    "energy",
    "forces",
    "stress",
    "magmom",
    "charge",
    "natoms",
    "calculator",
    "mass",
    "fmax",
    "smax",
    "volume",
    "age",
    "user",
    "formula",
    "pbc",
    "unique_id",
}
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _key_value_pairs(exported: ExportedRecord) -> dict[str, Any]:
    record = exported.record
    pairs: dict[str, Any] = {
        "record_id": record.record_id,
        "campaign_id": record.campaign_id,
        "code": record.method.code or "",
        "functional": record.method.functional or "",
        "potential": record.method.potential or "",
        "protocol": record.method.protocol or "",
        "method": record.method.label,
        "calculation": record.method.calculation or "",
        "license": record.governance.license or "",
    }
    results = record.results
    scalars = {
        "energy_per_atom": results.energy_per_atom,
        "band_gap": results.band_gap,
        "fermi_level": results.fermi_level,
        "total_magnetization": results.total_magnetization,
        **results.properties,
    }
    for name, value in scalars.items():
        if (
            _KEY.match(name)
            and name not in _RESERVED
            and isinstance(value, int | float | str | bool)
            and not (isinstance(value, float) and not math.isfinite(value))
        ):
            pairs[name] = value
    return pairs


def write_ase_db(records: Iterable[ExportedRecord], path: str | Path) -> int:
    """Write every record with a structure into a new ASE database; returns how many.

    Raises
    ------
    FileExistsError
        If ``path`` exists (an export never overwrites).
    """
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.data import atomic_numbers
    from ase.db import connect
    from ase.stress import full_3x3_to_voigt_6_stress

    target = Path(path)
    if target.exists():
        raise FileExistsError(f"{target}: exists; choose a new file for the ASE database")
    written = 0
    with connect(target, type="db", append=False) as database:
        for exported in records:
            record = exported.record
            system, results = record.system, record.results
            if system is None:
                continue
            atoms = Atoms(
                numbers=[atomic_numbers[s] for s in system.species_at_sites],
                positions=system.cartesian_site_positions,
                cell=system.lattice_vectors,
                pbc=[bool(p) for p in system.dimension_types],
            )
            calculated: dict[str, Any] = {}
            if results.energy is not None:
                calculated["energy"] = results.energy
            if results.forces is not None:
                calculated["forces"] = np.asarray(results.forces, dtype=float)
            if results.stress is not None:
                calculated["stress"] = full_3x3_to_voigt_6_stress(np.asarray(results.stress))
            if results.magnetic_moments is not None:
                calculated["magmoms"] = np.asarray(results.magnetic_moments, dtype=float)
            if calculated:
                atoms.calc = SinglePointCalculator(atoms, **calculated)
            database.write(
                atoms,
                key_value_pairs=_key_value_pairs(exported),
                data={"results": results.model_dump(mode="json")},
            )
            written += 1
    return written
