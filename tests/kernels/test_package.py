"""The package: cheap import, lazy exports, and the examples in every docstring."""

from __future__ import annotations

import doctest
import importlib
import subprocess
import sys

import numpy as np
import pytest

import matdx.kernels

MODULES = [
    "cells",
    "neighbors",
    "rdf",
    "correlation",
    "msd",
    "vacf",
    "structure_factor",
    "angles",
    "dos",
]


def test_import_compiles_nothing_and_skips_numba():
    # Time only this package: the parent ``matdx`` package is imported first.
    code = (
        "import sys, time; import matdx; had = 'numba' in sys.modules; "
        "t = time.perf_counter(); import matdx.kernels; dt = time.perf_counter() - t; "
        "loaded = [m for m in sys.modules if m.startswith('matdx.kernels.')]; "
        "print(dt, had or 'numba' not in sys.modules, len(loaded))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert float(out[0]) < 0.2
    assert out[1] == "True"  # numba was not imported by matdx.kernels
    assert out[2] == "0"  # no kernel module, so nothing to compile


@pytest.mark.parametrize("name", matdx.kernels.__all__)
def test_every_export_resolves(name):
    assert getattr(matdx.kernels, name) is not None


def test_unknown_attribute():
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        _ = matdx.kernels.nope


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"matdx.kernels.{name}")
    result = doctest.testmod(module, extraglobs={"np": np}, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0
