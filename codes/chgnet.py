"""CHGNet, a machine-learned universal potential, as a code.

CHGNet runs inside the job's Python process through its ASE calculator, on the CPU unless the
parameters ask for a GPU (``use_device``). Energies in eV, forces in eV/Å, stresses in GPa as
ASE reports them. The pretrained model was fitted to the Materials Project trajectory data
(PBE and PBE+U), so its results inherit that level of theory.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import version
from typing import Any

from matdx.codes.registry import ALL_RECIPES, CodeInfo

__all__ = ["CODE", "FUNCTIONAL", "NAME", "calculator", "method"]

NAME = "chgnet"
FUNCTIONAL = "CHGNet (trained on MPtrj, PBE/PBE+U)"


def calculator(parameters: Mapping[str, Any] | None = None) -> Any:
    """A new CHGNet ASE calculator; ``parameters`` go to ``CHGNetCalculator``
    (e.g. ``{"use_device": "cuda"}``)."""
    from chgnet.model.dynamics import CHGNetCalculator

    return CHGNetCalculator(**{"use_device": "cpu", **dict(parameters or {})})


def method(calculation: str, parameters: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The record's method section for a CHGNet calculation."""
    return {
        "code": NAME,
        "code_version": f"chgnet {version('chgnet')}",
        "calculation": calculation,
        "functional": FUNCTIONAL,
        "parameters": dict(parameters or {}),
    }


CODE = CodeInfo(NAME, ALL_RECIPES - {"bands"}, in_process=True, requires="chgnet",
                install_hint="pip install 'matdx[mlip]'")
