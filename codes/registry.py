"""The code registry: every code matdx can run, each declared by its own module in ``codes/``.

Two kinds of code:

* **in-process** codes run through an ASE calculator inside the job's process (EMT; CHGNet
  with the ``mlip`` extra): relaxations and MD use ASE's optimisers and integrators;
* **programs** (Quantum ESPRESSO, LAMMPS, VASP, CP2K, GPAW) run through their template:
  inputs written into a subdirectory of the job's run directory, the program executed,
  outputs parsed, failures diagnosed by the template's error handlers.

A code is one module ``matdx.codes.<name>`` that declares its registry entry as a
module-level ``CODE = CodeInfo(...)``: the recipes it supports, the elements it can treat,
its program and install hint, whether it relaxes cells, its template (inputs, parser,
handlers) and its input generator (:class:`~matdx.codes.inputs.InputGenerator`). The registry
finds those modules by that line without importing them (VASP's module alone takes seconds
to import because of pymatgen) and imports a module the first time its entry is asked for.
Adding a code is therefore adding its module.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matdx.codes.inputs import InputGenerator

__all__ = ["ALL_RECIPES", "CODES", "CodeInfo", "UnsupportedCode", "check_code", "code_info"]

#: Every recipe a code may declare.
ALL_RECIPES = frozenset({"static", "relax", "eos", "elastic", "phonon", "md", "bands"})

_DECLARATION = re.compile(r"^CODE = CodeInfo\(", re.MULTILINE)


class UnsupportedCode(ValueError):
    """A recipe was asked to run with a code that cannot run it here."""


@dataclass(frozen=True)
class CodeInfo:
    """One code's registry entry.

    Attributes
    ----------
    name
        Name used in campaign files (``code: espresso``); the name of its module.
    recipes
        Recipes this code can run.
    in_process
        Runs through an ASE calculator in the job's process (no files, no binary).
    program
        Executable a program code needs on PATH, checked before anything is submitted to the
        local executor (None for in-process codes).
    elements
        Elements the code can describe; None when any element may work (it then depends on
        the pseudopotentials or potentials, checked by ``check_inputs`` or the template).
    requires
        Python module an in-process code needs (an optional extra).
    install_hint
        How to install what is missing.
    cell_relax
        Can relax the cell, not only the atomic positions.
    template
        Makes the program's template (None for in-process codes).
    check_inputs
        Checks that the inputs exist for these elements and code parameters (e.g. a
        pseudopotential for every element), raising ``ValueError``.
    inputs
        The input generator: protocol level + structure + user parameters → the complete
        parameters of one run.
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
    inputs: InputGenerator = field(default_factory=InputGenerator, compare=False)


@functools.cache
def _code_modules() -> tuple[str, ...]:
    """Names of the modules of ``codes/`` that declare a registry entry, sorted."""
    directory = Path(__file__).parent
    return tuple(sorted(
        path.stem for path in directory.glob("*.py")
        if path.stem != "registry" and _DECLARATION.search(path.read_text(encoding="utf-8"))
    ))


@functools.cache
def _entry(name: str) -> CodeInfo:
    info = importlib.import_module(f"matdx.codes.{name}").CODE
    if info.name != name:
        raise RuntimeError(f"matdx.codes.{name} declares the code {info.name!r}")
    return info


class _Registry(Mapping[str, CodeInfo]):
    """Code name → :class:`CodeInfo`; a code's module is imported on first access."""

    def __getitem__(self, name: str) -> CodeInfo:
        if name not in _code_modules():
            raise KeyError(name)
        return _entry(name)

    def __iter__(self) -> Iterator[str]:
        return iter(_code_modules())

    def __len__(self) -> int:
        return len(_code_modules())


CODES: Mapping[str, CodeInfo] = _Registry()


def code_info(code: str) -> CodeInfo:
    """The :class:`CodeInfo` of ``code``.

    Raises
    ------
    UnsupportedCode
        For an unknown code name.
    """
    try:
        return CODES[code]
    except (KeyError, TypeError):
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
