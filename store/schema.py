"""Publish the record schema as JSON Schema (``docs/schema/record-v<N>.json``).

The published file is generated from :class:`matdx.store.records.CalculationRecord`, never
edited by hand; a test checks that it equals what the models generate, so it cannot go stale.
Regenerate it after changing the models::

    python -m matdx.store.schema docs/schema
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from matdx.store.records import SCHEMA_VERSION, STRESS_CONVENTION, CalculationRecord

__all__ = ["publish", "record_json_schema", "schema_file_name", "schema_text"]

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def schema_file_name(version: int = SCHEMA_VERSION) -> str:
    return f"record-v{version}.json"


def record_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a record document of the current version."""
    schema = CalculationRecord.model_json_schema(mode="validation")
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": f"matdx:schema:{schema_file_name()}",
        **schema,
        "title": f"matdx calculation record, schema version {SCHEMA_VERSION}",
        "description": (
            "One record per job attempt that ran. Units: energy eV, length Å, force eV/Å, "
            "stress eV/Å³ (" + STRESS_CONVENTION + "), time fs, temperature K, elastic "
            "constants and moduli GPa."
        ),
    }


def schema_text() -> str:
    """The published file's exact content."""
    return json.dumps(record_json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def publish(directory: str | Path) -> Path:
    """Write ``record-v<N>.json`` for the current version into ``directory``; returns it."""
    target = Path(directory) / schema_file_name()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(schema_text(), encoding="utf-8")
    return target


if __name__ == "__main__":
    print(publish(sys.argv[1] if len(sys.argv) > 1 else "docs/schema"))
