"""What a campaign may ask for: physical ranges of settings, and sizes.

Recipe settings carry their unit in their name (``temperature_K``, ``timestep_fs``,
``friction_per_fs``), so one table checks every recipe's settings against the range in which a
value is physics rather than a typo, before anything runs:

==================  ==========================  ==============================================
name                accepted                    why
==================  ==========================  ==============================================
``*_K``             0 < T ≤ 100 000 K           above, no potential or functional means anything
``timestep_fs``     0 < Δt ≤ 10 fs              atoms fly apart beyond ~10 fs (heavy atoms)
``*_per_fs``        0 < γ ≤ 10 fs⁻¹             friction beyond damps all motion in one step
``steps``           1 ≤ n ≤ 100 000 000         a run, not a lifetime
``*_steps``         0 ≤ n ≤ 100 000 000
``seed``            0 ≤ seed ≤ 900 000 000      the largest seed LAMMPS's integrators accept
==================  ==========================  ==============================================

Every number must be finite, and a boolean is never a number (``temperature_K: true`` would
otherwise become 1 K). Sizes are capped unless the user forces them (``--force-large``):
``MAX_SWEEP_POINTS`` per study, ``MAX_WORKFLOWS`` per campaign, and
:data:`matdx.workflows.structures.MAX_ATOMS` per structure.
"""

from __future__ import annotations

import math
import types
import typing
from typing import Any

__all__ = ["MAX_SWEEP_POINTS", "MAX_WORKFLOWS", "RANGES", "setting_problem"]

MAX_SWEEP_POINTS = 1_000  # combinations of one study's sweep
MAX_WORKFLOWS = 10_000  # workflows of one campaign

#: (name or suffix, low, high, low included, unit); names are matched before suffixes.
RANGES: tuple[tuple[str, float, float, bool, str], ...] = (
    ("timestep_fs", 0.0, 10.0, False, " fs"),
    ("steps", 1, 100_000_000, True, ""),
    ("seed", 0, 900_000_000, True, ""),
    ("_steps", 0, 100_000_000, True, ""),
    ("_per_fs", 0.0, 10.0, False, " fs⁻¹"),
    ("_K", 0.0, 100_000.0, False, " K"),
)


def _accepts_bool(annotation: Any) -> bool:
    if annotation is bool or annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _accepts_bool(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_accepts_bool(arg) for arg in typing.get_args(annotation))
    return False


def _is_number(annotation: Any) -> bool:
    if annotation in (int, float):
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _is_number(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_is_number(arg) for arg in typing.get_args(annotation))
    return False


def _range(name: str) -> tuple[float, float, bool, str] | None:
    for key, *bounds in RANGES:
        if name == key:
            return tuple(bounds)  # type: ignore[return-value]
    for key, *bounds in RANGES:
        if key.startswith("_") and name.endswith(key):
            return tuple(bounds)  # type: ignore[return-value]
    return None


def setting_problem(name: str, value: Any, annotation: Any) -> str | None:
    """Why ``value`` is not acceptable for the setting ``name`` (None if it is).

    Parameters
    ----------
    annotation
        The type the setting is declared with (a pydantic field's ``annotation``).

    Examples
    --------
    >>> setting_problem("temperature_K", True, float)
    'expected a number, got a boolean (true)'
    >>> setting_problem("temperature_K", 1e9, float)
    'must be at most 100000 K; got 1e+09'
    """
    if isinstance(value, bool):
        if _is_number(annotation) and not _accepts_bool(annotation):
            return f"expected a number, got a boolean ({str(value).lower()})"
        return None
    if not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number; got {value}"
    bounds = _range(name)
    if bounds is None:
        return None
    low, high, closed, unit = bounds
    if value < low or (value == low and not closed):
        relation = "at least" if closed else "greater than"
        return f"must be {relation} {low:g}{unit}; got {value:g}"
    if value > high:
        return f"must be at most {high:g}{unit}; got {value:g}"
    return None
