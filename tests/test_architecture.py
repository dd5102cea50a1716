"""The import arrows of ARCHITECTURE.md: each subsystem imports only the ones it may.

Every import counts, including those inside functions, because a lazy import is still a
dependency. ``matdx.safety`` is a leaf that any subsystem may use to check user text.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAY_IMPORT = {
    "workflows": {"store", "hpc"},
    "recipes": {"workflows", "codes", "kernels"},
    "codes": set(),
    "hpc": set(),
    "kernels": set(),
    "store": set(),
    "api": {"store", "workflows"},
    "safety": set(),
}
ALWAYS = {"safety"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n == "matdx" or n.startswith("matdx.")}


CASES = [
    (folder, path)
    for folder in MAY_IMPORT
    if (ROOT / folder).is_dir()
    for path in sorted((ROOT / folder).rglob("*.py"))
]


@pytest.mark.parametrize(("folder", "path"), CASES,
                         ids=[str(p.relative_to(ROOT)) for _, p in CASES])
def test_subsystem_imports_only_what_it_may(folder, path):
    allowed = MAY_IMPORT[folder] | ALWAYS | {folder}
    for name in _imports(path):
        parts = name.split(".")
        target = parts[1] if len(parts) > 1 else "matdx"
        assert target in allowed, (
            f"{path.relative_to(ROOT)} imports {name}; {folder}/ may import only "
            f"{sorted(MAY_IMPORT[folder]) or 'nothing of matdx'}"
        )
