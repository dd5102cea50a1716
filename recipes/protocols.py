"""Protocols: named accuracy levels (``fast``, ``moderate``, ``precise``) of each code.

Each program code has a YAML file in ``recipes/protocols/``: one mapping per level, where
``PARENT`` names a level to inherit from (deep-merged, the child wins). A level holds the code
parameters (``parameters``) plus recipe-level knobs a code needs (e.g. Quantum ESPRESSO's
cutoff factor). The user's parameters are merged over the protocol's and win; each key they
override is reported as a warning in the record.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml

from matdx.workflows.corrections import deep_merge

__all__ = ["LEVELS", "Protocol", "load_protocol", "merge_parameters"]

LEVELS = ("fast", "moderate", "precise")
Protocol = Literal["fast", "moderate", "precise"]
DIRECTORY = Path(__file__).with_name("protocols")


@functools.cache
def _levels(code: str) -> dict[str, Any]:
    path = DIRECTORY / f"{code}.yaml"
    if not path.is_file():
        return {}
    return yaml.safe_load(path.read_text()) or {}


def load_protocol(code: str, level: str) -> dict[str, Any]:
    """The resolved protocol ``level`` of ``code`` (empty for codes without protocols).

    Raises
    ------
    ValueError
        For an unknown level, or a PARENT cycle.
    """
    if level not in LEVELS:
        raise ValueError(f"protocol: unknown level {level!r}; accepted: {', '.join(LEVELS)}")
    levels = _levels(code)
    chain, name = [], level
    while name is not None:
        if name in chain:
            raise ValueError(f"protocol: {code}.yaml has a PARENT cycle through {name!r}")
        chain.append(name)
        name = (levels.get(name) or {}).get("PARENT")
    resolved: dict[str, Any] = {}
    for name in reversed(chain):
        resolved = deep_merge(resolved, {k: v for k, v in (levels.get(name) or {}).items()
                                     if k != "PARENT"})
    return resolved


def _overridden(base: Mapping[str, Any], update: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in update.items():
        where = f"{prefix}{key}"
        if isinstance(value, Mapping) and isinstance(base.get(key), Mapping):
            keys += _overridden(base[key], value, f"{where}.")
        elif key in base and base[key] != value:
            keys.append(where)
    return keys


def merge_parameters(protocol: Mapping[str, Any], user: Mapping[str, Any] | None
                     ) -> tuple[dict[str, Any], list[str]]:
    """Protocol parameters with the user's merged over them (copies; inputs untouched).

    Returns
    -------
    parameters, warnings
        The merged parameters, and one warning per protocol value the user overrode.
    """
    base = protocol.get("parameters") or {}
    user = dict(user or {})
    warnings = [f"parameters.{key} overrides the protocol's value"
                for key in _overridden(base, user)]
    return deep_merge(base, user), warnings
