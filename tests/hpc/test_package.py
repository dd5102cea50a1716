"""The matdx.hpc package: lazy public names, and no imports of other matdx subsystems
(the leaf :mod:`matdx.safety` aside)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import matdx.hpc as hpc

HPC_DIR = Path(hpc.__file__).parent


def test_all_matches_the_lazy_export_table():
    assert hpc.__all__ == sorted(hpc._EXPORTS)
    for name in hpc.__all__:
        assert getattr(hpc, name).__name__ == name
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        hpc.nope  # noqa: B018


def test_importing_the_package_stays_light():
    code = "import sys, matdx.hpc; print('pydantic' in sys.modules, 'yaml' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["False", "False"]


@pytest.mark.parametrize("path", sorted(HPC_DIR.glob("*.py")), ids=lambda p: p.name)
def test_hpc_is_a_leaf(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            if name.startswith("matdx."):
                assert name.startswith(("matdx.hpc", "matdx.safety")), f"{path.name} imports {name}"
