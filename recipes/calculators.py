"""In-process codes: ASE calculators run inside the job's process (EMT, CHGNet)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ase.calculators.calculator import Calculator

from matdx.codes import emt
from matdx.recipes.codes import code_info

__all__ = ["calculator", "method"]


def calculator(code: str, parameters: Mapping[str, Any] | None = None) -> Calculator:
    """A new ASE calculator for an in-process code.

    Raises
    ------
    UnsupportedCode
        For program codes and unknown names.
    ValueError
        For parameters the calculator does not take.
    """
    info = code_info(code)
    if not info.in_process:
        raise ValueError(f"code: {code} is a program, not an in-process calculator")
    if code == "emt":
        return emt.calculator(parameters)
    from chgnet.model.dynamics import CHGNetCalculator

    options = {"use_device": "cpu", **dict(parameters or {})}  # the GPU only when asked for
    return CHGNetCalculator(**options)


def method(code: str, calculation: str, parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    """The record's method section of an in-process calculation."""
    if code == "emt":
        return emt.method(calculation, parameters)
    from importlib.metadata import version

    return {"code": code, "code_version": f"chgnet {version('chgnet')}",
            "calculation": calculation, "functional": "CHGNet (trained on MPtrj, PBE/PBE+U)",
            "parameters": dict(parameters or {})}
