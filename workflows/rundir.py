"""Run directories: everything one job attempt needs, and what it leaves behind.

A run directory holds ``job.json`` (the fully resolved inputs), the code's inputs and outputs,
and ``result.json``, written last and atomically (a temporary file renamed into place), so a
reader sees either no result or a whole one. Compute nodes only ever touch run directories;
the tick reads results from them.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from matdx.workflows.files import iter_artifacts
from matdx.workflows.serialization import JSON, sha256_json

__all__ = [
    "JOB_FILE",
    "RESULT_FILE",
    "input_hash",
    "read_json",
    "write_json_atomic",
]

JOB_FILE = "job.json"
RESULT_FILE = "result.json"


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` so that readers never see a partial file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, allow_nan=False, separators=(",", ":"))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_json(path: str | Path) -> Any:
    with open(path) as handle:
        return json.load(handle)


def input_hash(function: str, inputs: JSON) -> str:
    """The de-duplication key of a job: its function and resolved inputs.

    Artifacts count by content (sha256), not by where a copy of them lies.
    """
    inputs = copy.deepcopy(inputs)
    for artifact in iter_artifacts(inputs):
        artifact.pop("path", None)
    return sha256_json({"function": function, "inputs": inputs})
