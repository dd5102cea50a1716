"""The codes recipes can run, and what each one supports.

Two kinds of code:

* **in-process** codes run through an ASE calculator inside the job's process (EMT; CHGNet
  with the ``mlip`` extra): relaxations and MD use ASE's optimisers and integrators;
* **programs** (Quantum ESPRESSO, LAMMPS, VASP, CP2K) run through their ``matdx.codes``
  template: inputs written into a subdirectory of the job's run directory, the program
  executed, outputs parsed, failures diagnosed by the template's error handlers.

Every code declares the recipes it supports, so an unsupported recipe/code pair is a
validation error when a campaign is submitted, as are elements a code cannot describe and
programs that are not installed.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CODES", "CodeInfo", "UnsupportedCode", "check_code", "code_info"]


class UnsupportedCode(ValueError):
    """A recipe was asked to run with a code that cannot run it here."""


@dataclass(frozen=True)
class CodeInfo:
    """What recipes need to know about one code.

    Attributes
    ----------
    name
        Name used in campaign files (``code: espresso``).
    recipes
        Recipes this code can run.
    in_process
        Runs through an ASE calculator in the job's process (no files, no binary).
    program
        Executable a program code needs on PATH, checked before anything is submitted to the
        local executor (None for in-process codes and programs that cannot run here).
    elements
        Elements the code can describe; None when any element may work (it then depends on
        the pseudopotentials or potentials, checked by the template before running).
    requires
        Python module an in-process code needs (an optional extra).
    install_hint
        How to install what is missing.
    cell_relax
        Can relax the cell (``vc-relax``), not only the atomic positions.
    template
        Makes the program's ``matdx.codes`` template.
    check_inputs
        Checks that the inputs exist for these elements and code parameters (e.g. a
        pseudopotential for every element), raising ``ValueError``.
    """

    name: str
    recipes: frozenset[str]
    in_process: bool = False
    program: str | None = None
    elements: frozenset[str] | None = None
    requires: str | None = None
    install_hint: str = ""
    cell_relax: bool = True
    template: Callable[[], Any] | None = field(default=None, compare=False)
    check_inputs: Callable[[list[str], dict[str, Any]], None] | None = field(
        default=None, compare=False)


def _emt_elements() -> frozenset[str]:
    from matdx.codes.emt import ELEMENTS

    return ELEMENTS


def espresso_pseudopotentials(elements: list[str], parameters: Mapping[str, Any],
                              pseudo_dir: str | None = None) -> dict[str, Any]:
    """The pseudopotential chosen for each element from ``pseudo_dir`` (else the parameters'
    ``pseudo_dir``, else the Debian data directory), for the parameters' ``functional`` and
    explicit ``pseudopotentials``.

    Raises
    ------
    matdx.codes.errors.SetupError
        When an element has no pseudopotential there.
    """
    from pathlib import Path

    from matdx.codes.espresso import DEFAULT_PSEUDO_DIR, select_pseudopotentials

    return select_pseudopotentials(
        elements, Path(pseudo_dir or parameters.get("pseudo_dir") or DEFAULT_PSEUDO_DIR),
        functional=str(parameters.get("functional", "PBE")),
        explicit=parameters.get("pseudopotentials"),
    )


def _espresso_pseudopotentials(elements: list[str], parameters: dict[str, Any]) -> None:
    espresso_pseudopotentials(elements, parameters)


def _emt_parameters(elements: list[str], parameters: dict[str, Any]) -> None:
    """EMT's own check of its parameters (matdx.codes.emt), run at submit."""
    from matdx.codes.emt import calculator

    try:
        calculator(parameters)
    except ValueError as err:
        raise ValueError(str(err).removeprefix("parameters: ")) from err


def _template(module: str, name: str) -> Callable[[], Any]:
    def make() -> Any:
        return getattr(importlib.import_module(f"matdx.codes.{module}"), name)()

    return make


ALL_RECIPES = frozenset({"static", "relax", "eos", "elastic", "phonon", "md", "bands"})

CODES: dict[str, CodeInfo] = {
    "emt": CodeInfo("emt", ALL_RECIPES - {"bands"}, in_process=True,
                    elements=_emt_elements(), check_inputs=_emt_parameters),
    "chgnet": CodeInfo("chgnet", ALL_RECIPES - {"bands"}, in_process=True, requires="chgnet",
                       install_hint="pip install 'matdx[mlip]'"),
    "espresso": CodeInfo("espresso", ALL_RECIPES - {"md"}, program="pw.x",
                         install_hint="apt-get install quantum-espresso quantum-espresso-data",
                         template=_template("espresso", "EspressoTemplate"),
                         check_inputs=_espresso_pseudopotentials),
    "lammps": CodeInfo("lammps", frozenset({"static", "relax", "eos", "elastic", "phonon",
                                            "md"}),
                       program="lmp", install_hint="apt-get install lammps lammps-data",
                       template=_template("lammps", "LammpsTemplate")),
    "vasp": CodeInfo("vasp", frozenset({"static", "relax", "eos", "elastic", "bands"}),
                     program="vasp_std", install_hint="VASP is licensed; install it on the site",
                     template=_template("vasp", "VaspTemplate")),
    "cp2k": CodeInfo("cp2k", frozenset({"static", "relax", "eos"}), program="cp2k",
                     cell_relax=False,
                     install_hint="apt-get install cp2k cp2k-data",
                     template=_template("cp2k", "Cp2kTemplate")),
}


def code_info(code: str) -> CodeInfo:
    """The :class:`CodeInfo` of ``code``.

    Raises
    ------
    UnsupportedCode
        For an unknown code name.
    """
    try:
        return CODES[code]
    except KeyError:
        raise UnsupportedCode(
            f"code: unknown code {code!r}; available: {', '.join(sorted(CODES))}"
        ) from None


def check_code(code: str, recipe: str, symbols: Iterable[str],
               parameters: dict[str, Any] | None = None, *, local: bool = True) -> None:
    """Raise :class:`UnsupportedCode` (naming the field) unless ``code`` can run ``recipe``
    on these elements here.

    Parameters
    ----------
    local
        The jobs will run on this machine: the program (or Python package) must be installed.
    """
    info = code_info(code)
    symbols = list(dict.fromkeys(symbols))
    if recipe not in info.recipes:
        raise UnsupportedCode(
            f"code: {code} cannot run the {recipe!r} recipe; it runs "
            f"{', '.join(sorted(info.recipes))}"
        )
    if info.elements is not None:
        missing = sorted(set(symbols) - info.elements)
        if missing:
            raise UnsupportedCode(
                f"code: {code} has no parameters for {', '.join(missing)}; it describes "
                f"{', '.join(sorted(info.elements))}"
            )
    if not local:
        return
    if info.program is not None and shutil.which(info.program) is None:
        raise UnsupportedCode(
            f"code: {code} needs the program {info.program!r}, which is not installed here; "
            f"{info.install_hint}"
        )
    if info.requires is not None and importlib.util.find_spec(info.requires) is None:
        raise UnsupportedCode(
            f"code: {code} needs the Python package {info.requires!r}; {info.install_hint}"
        )
    if info.check_inputs is not None:
        try:
            info.check_inputs(symbols, dict(parameters or {}))
        except ValueError as err:
            raise UnsupportedCode(f"parameters: {err}") from err
