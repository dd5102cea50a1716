"""Where a validation problem lies, written the way users write the field."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["field_path"]


def field_path(location: Sequence[Any]) -> str:
    """A pydantic error location as a dotted path with list indices in brackets.

    Examples
    --------
    >>> field_path(("structures", 2, "bulk"))
    'structures[2].bulk'
    """
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in location).lstrip(".")
