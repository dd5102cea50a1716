"""A Parquet table of scalar results, one row per record (pyarrow).

Columns: ``record_id``, ``campaign_id``, ``job_name``, ``status``, ``code``, ``code_version``,
``calculation``, ``functional``, ``potential``, ``protocol``, ``method`` (one line of all
four), ``formula`` (reduced), ``elements`` (list of strings),
``nsites``, ``energy`` (eV), ``energy_per_atom`` (eV/atom), ``band_gap`` (eV),
``fermi_level`` (eV), ``total_magnetization`` (μB), ``converged``, ``owner``, ``project``,
``access``, ``license``, ``created_at`` (UTC), then one ``property.<name>`` column per numeric
``results.properties`` entry found in any record (units in the name; null where a record has
none). The schema's metadata records the units.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from matdx.store.exporting import ExportedRecord

__all__ = ["UNITS", "write_parquet"]

UNITS = {
    "energy": "eV",
    "energy_per_atom": "eV/atom",
    "band_gap": "eV",
    "fermi_level": "eV",
    "total_magnetization": "μB",
}


def _row(exported: ExportedRecord) -> dict[str, Any]:
    record = exported.record
    system, results, method = record.system, record.results, record.method
    row: dict[str, Any] = {
        "record_id": record.record_id,
        "campaign_id": record.campaign_id,
        "job_name": record.job_name,
        "status": record.run.status,
        "code": method.code,
        "code_version": method.code_version,
        "calculation": method.calculation,
        "functional": method.functional,
        "potential": method.potential,
        "protocol": method.protocol,
        "method": method.label,
        "formula": system.chemical_formula_reduced if system else None,
        "elements": list(system.elements) if system else None,
        "nsites": system.nsites if system else None,
        "energy": results.energy,
        "energy_per_atom": results.energy_per_atom,
        "band_gap": results.band_gap,
        "fermi_level": results.fermi_level,
        "total_magnetization": results.total_magnetization,
        "converged": results.converged,
        "owner": record.governance.owner,
        "project": record.governance.project,
        "access": record.governance.access,
        "license": record.governance.license,
        "created_at": exported.created_at,
    }
    for name, value in results.properties.items():
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            row[f"property.{name}"] = float(value)
    return row


def _arrow_type(name: str) -> Any:
    import pyarrow as pa

    if name == "elements":
        return pa.list_(pa.string())
    if name == "created_at":
        return pa.timestamp("us", tz="UTC")
    if name == "nsites":
        return pa.int64()
    if name == "converged":
        return pa.bool_()
    if name.startswith("property.") or name in UNITS:
        return pa.float64()
    return pa.string()


def write_parquet(records: Iterable[ExportedRecord], path: str | Path) -> int:
    """Write one row per record; returns the number of rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [_row(exported) for exported in records]
    names = list(dict.fromkeys(key for row in rows for key in row))
    fixed = [name for name in names if not name.startswith("property.")]
    extra = sorted(name for name in names if name.startswith("property."))
    schema = pa.schema(
        [pa.field(name, _arrow_type(name)) for name in [*fixed, *extra]],
        metadata={"units": repr(UNITS)},
    )
    table = pa.Table.from_pylist(rows, schema=schema)
    target = Path(path)
    partial = target.with_name(f".{target.name}.partial")
    pq.write_table(table, partial)
    partial.replace(target)
    return table.num_rows
