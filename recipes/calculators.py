"""In-process codes: ASE calculators run inside the job's process (EMT, CHGNet).

Each in-process code is a module ``matdx.codes.<name>`` with ``calculator(parameters)`` and
``method(calculation, parameters)``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from ase.calculators.calculator import Calculator

from matdx.codes.registry import code_info

__all__ = ["calculator", "method"]


def _module(code: str) -> Any:
    info = code_info(code)
    if not info.in_process:
        raise ValueError(f"code: {code} is a program, not an in-process calculator")
    return importlib.import_module(f"matdx.codes.{info.name}")


def calculator(code: str, parameters: Mapping[str, Any] | None = None) -> Calculator:
    """A new ASE calculator for an in-process code.

    Raises
    ------
    UnsupportedCode
        For unknown names.
    ValueError
        For program codes, and for parameters the calculator does not take.
    """
    return _module(code).calculator(parameters)


def method(code: str, calculation: str, parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    """The record's method section of an in-process calculation."""
    return _module(code).method(calculation, parameters)
