"""Codes that run inside the Python process through an ASE calculator (EMT for now)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ase.calculators.calculator import Calculator

from matdx.codes import emt

__all__ = ["IN_PROCESS_CODES", "UnsupportedCode", "calculator", "check_code", "method"]

IN_PROCESS_CODES = {emt.NAME: emt}


class UnsupportedCode(ValueError):
    """A recipe was asked to run with a code it does not support."""


def _module(code: str) -> Any:
    try:
        return IN_PROCESS_CODES[code]
    except KeyError:
        raise UnsupportedCode(
            f"code: unknown code {code!r}; available: {', '.join(sorted(IN_PROCESS_CODES))}"
        ) from None


def check_code(code: str, calculation: str, symbols: Iterable[str]) -> None:
    """Raise if ``code`` cannot do ``calculation`` on these elements."""
    module = _module(code)
    if calculation not in module.CALCULATIONS:
        raise UnsupportedCode(
            f"code: {code} cannot run {calculation!r} calculations; it runs "
            f"{', '.join(sorted(module.CALCULATIONS))}"
        )
    try:
        module.check_elements(symbols)
    except ValueError as err:
        raise UnsupportedCode(f"code: {err}") from err


def calculator(code: str, parameters: Mapping[str, Any] | None = None) -> Calculator:
    return _module(code).calculator(parameters)


def method(code: str, calculation: str, parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    return _module(code).method(calculation, parameters)
