"""The base of recipe makers: which code runs the recipe, with which parameters and protocol."""

from __future__ import annotations

import copy
from typing import Any

from ase import Atoms
from pydantic import Field

from matdx.codes.inputs import Protocol
from matdx.codes.registry import check_code, code_info
from matdx.workflows.maker import Maker

__all__ = ["CodeMaker"]


class CodeMaker(Maker):
    """Settings every recipe has.

    Attributes
    ----------
    code
        A code of the registry (:mod:`matdx.codes.registry`), e.g. ``emt``.
    parameters
        Code parameters, merged over the protocol's (the user's values win). ``pseudo_dir``
        names the pseudopotential (or potential) directory.
    protocol
        Accuracy level of the code's defaults: ``fast``, ``moderate`` or ``precise``.
    """

    code: str = "emt"
    parameters: dict[str, Any] = Field(default_factory=dict)
    protocol: Protocol = "moderate"

    @property
    def relaxes_cell(self) -> bool:
        """Whether the recipe relaxes the cell (its ``relax_cell`` or ``relax_first``)."""
        return bool(getattr(self, "relax_cell", getattr(self, "relax_first", False)))

    def check(self, atoms: Atoms, *, local: bool = True) -> None:
        check_code(self.code, self.name, atoms.get_chemical_symbols(), self.parameters,
                   local=local)
        if self.relaxes_cell and atoms.pbc.all() and not code_info(self.code).cell_relax:
            field = "relax_cell" if hasattr(self, "relax_cell") else "relax_first"
            raise ValueError(f"{field}: {self.code} cannot relax the cell; set {field}: false")

    def code_settings(self) -> dict[str, Any]:
        """Keyword arguments every calculation job of the recipe takes."""
        return {"code": self.code, "parameters": copy.deepcopy(self.parameters),
                "protocol": self.protocol}
