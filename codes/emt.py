"""EMT, ASE's effective-medium theory potential, as a code.

EMT runs inside the Python process (no files, no binary), so every recipe can run anywhere:
it is the code of the embedded demo. It is parameterised for Al, Cu, Ag, Au, Ni, Pd and Pt
(and, roughly, H, C, N, O), and meant for tests and demonstrations, not for production science.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ase
from ase.calculators.emt import EMT
from ase.calculators.emt import parameters as emt_parameters

from matdx.codes.registry import ALL_RECIPES, CodeInfo

__all__ = ["CODE", "ELEMENTS", "NAME", "calculator", "method"]

NAME = "emt"
ELEMENTS = frozenset(emt_parameters)
_ACCEPTED = {"asap_cutoff"}


def calculator(parameters: Mapping[str, Any] | None = None) -> EMT:
    """A new EMT calculator.

    Parameters
    ----------
    parameters
        ``{"asap_cutoff": bool}`` (ASE's option), or empty.

    Raises
    ------
    ValueError
        For parameters EMT does not take.
    """
    parameters = dict(parameters or {})
    unknown = sorted(set(parameters) - _ACCEPTED)
    if unknown:
        raise ValueError(f"parameters: EMT does not take {unknown}; accepted: {sorted(_ACCEPTED)}")
    return EMT(**parameters)


def method(calculation: str, parameters: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The record's method section for an EMT calculation."""
    return {
        "code": NAME,
        "code_version": f"ase {ase.__version__}",
        "calculation": calculation,
        "functional": "EMT",
        "parameters": dict(parameters or {}),
    }


def check_parameters(elements: list[str], parameters: dict[str, Any]) -> None:
    """EMT's own check of its parameters, run at submit (raises ``ValueError``)."""
    try:
        calculator(parameters)
    except ValueError as err:
        raise ValueError(str(err).removeprefix("parameters: ")) from err


CODE = CodeInfo(NAME, ALL_RECIPES - {"bands"}, in_process=True, elements=ELEMENTS,
                check_inputs=check_parameters)
