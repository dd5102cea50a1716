"""matdx: high-throughput computational materials science.

>>> from matdx import Client, job, Flow, Response   # doctest: +SKIP
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

try:
    __version__ = metadata.version("matdx")
except metadata.PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0+unknown"

__all__ = ["ArtifactFile", "Client", "Flow", "Response", "__version__", "job"]

_LAZY = {
    "Client": "matdx.client",
    "ArtifactFile": "matdx.workflows",
    "Flow": "matdx.workflows",
    "Response": "matdx.workflows",
    "job": "matdx.workflows",
}


def __getattr__(name: str) -> Any:
    # Imported on first use, so that `matdx --help` does not load the whole stack.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'matdx' has no attribute {name!r}")
