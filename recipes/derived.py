"""The method of a derived result: the method its input calculations share.

A fit (equation of state, elastic constants, force constants) or an analysis (of an MD
trajectory) is only meaningful when every calculation it uses was done the same way: same code
and version, functional, interatomic potential, pseudopotentials (by sha256), protocol and basis
(:func:`matdx.store.records.method_identity`). :func:`derived_method` checks that and returns
the record method of the derived result: the inputs' method, with the derived calculation type
and its own settings, and the inputs' raw parameters under ``input_parameters``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from matdx.workflows.records import method_identity, potential_of

__all__ = ["MixedMethods", "derived_method"]


class MixedMethods(ValueError):
    """The inputs of a fit or analysis were computed with different methods."""


def derived_method(methods: Sequence[dict[str, Any] | None], calculation: str,
                   parameters: dict[str, Any]) -> dict[str, Any]:
    """The method section of a result derived from calculations with ``methods``.

    Parameters
    ----------
    methods
        The method sections of the input calculations (their outputs' ``method``).
    calculation
        The derived calculation type (``eos-fit``, ``elastic-fit``, ``phonon``, ...).
    parameters
        The derived calculation's own settings (fit form, strains, supercell, ...).

    Returns
    -------
    dict
        The record's method section; only ``calculation`` and ``parameters`` when no input
        names a method (numbers given by hand).

    Raises
    ------
    MixedMethods
        When two inputs differ in code, version, functional, potential, pseudopotentials,
        protocol, basis or smearing (fixed occupations have none); the message names the
        first field that differs and both values.
    """
    known = [dict(m) for m in methods if isinstance(m, dict)]
    if not known:  # inputs given as bare numbers (no calculation behind them to inherit)
        return {"calculation": calculation, "parameters": dict(parameters)}
    if len(known) != len(methods):
        missing = len(methods) - len(known)
        raise MixedMethods(f"methods: {missing} of {len(methods)} inputs name no method; "
                           "a derived result needs all or none")
    first = method_identity(known[0])
    for index, other in enumerate(known[1:], start=1):
        identity = method_identity(other)
        for field, value in first.items():
            if identity[field] != value:
                raise MixedMethods(
                    f"methods[{index}].{field}: {identity[field]!r} differs from "
                    f"{value!r} of methods[0]; a {calculation} needs inputs computed with "
                    "one method"
                )
    smearing = known[0].get("smearing")
    for index, other in enumerate(known[1:], start=1):
        if other.get("smearing") != smearing:  # fixed occupations name none
            raise MixedMethods(
                f"methods[{index}].smearing: {other.get('smearing')!r} differs from "
                f"{smearing!r} of methods[0]; a {calculation} needs inputs computed with "
                "one occupation scheme"
            )
    base = known[0]
    inherited = {key: base[key] for key in ("code", "code_version", "functional",
                                            "pseudopotentials", "basis", "kpoints", "smearing",
                                            "spin") if base.get(key) is not None}
    return {
        **inherited,
        "calculation": calculation,
        "potential": first["potential"] or potential_of(base),
        "protocol": first["protocol"],
        "parameters": {**parameters, "input_parameters": base.get("parameters") or {}},
    }
