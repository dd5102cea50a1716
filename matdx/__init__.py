"""matdx: high-throughput computational materials science.

>>> from matdx import Client, job, Flow, Response   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

__all__ = ["ArtifactFile", "Client", "Flow", "Response", "__version__", "job"]

_LAZY = {
    "Client": "matdx.client",
    "ArtifactFile": "matdx.workflows",
    "Flow": "matdx.workflows",
    "Response": "matdx.workflows",
    "job": "matdx.workflows",
}


def __getattr__(name: str) -> Any:
    # Imported on first use, so that `matdx --help` and task farms start fast.
    if name == "__version__":
        from importlib import metadata

        try:
            return metadata.version("matdx")
        except metadata.PackageNotFoundError:  # a source tree that was never installed
            return "0+unknown"
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'matdx' has no attribute {name!r}")
