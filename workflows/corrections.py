"""Corrections: input changes that error handlers make to a job for its next attempt."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from matdx.workflows.serialization import JSON

__all__ = ["apply_corrections", "deep_merge"]


def deep_merge(base: Any, update: Any) -> Any:
    """``update`` merged into a copy of ``base``: dicts merge key by key, anything else in
    ``update`` replaces what was there."""
    if not (isinstance(base, Mapping) and isinstance(update, Mapping)):
        return copy.deepcopy(update)
    merged = dict(base)
    for key, value in update.items():
        merged[key] = deep_merge(base[key], value) if key in base else copy.deepcopy(value)
    return merged


def apply_corrections(inputs: JSON, corrections: Sequence[Mapping[str, Any]]) -> JSON:
    """Encoded inputs with each correction's ``inputs_update`` merged in, in order."""
    for correction in corrections:
        inputs = deep_merge(inputs, correction.get("inputs_update") or {})
    return inputs
