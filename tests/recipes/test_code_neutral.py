"""recipes/ keeps only the science: no recipe compares a code against a code's name (what a
code needs lives in its own module in codes/, reached through the registry)."""

from __future__ import annotations

import ast
from pathlib import Path

from matdx.codes.registry import CODES

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def _branches_on_code_names(path: Path) -> list[str]:
    names = set(CODES)
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for operand in operands:
                values = operand.elts if isinstance(operand, ast.Tuple | ast.List | ast.Set) \
                    else [operand]
                found += [f"{path.name}:{node.lineno} compares with {v.value!r}"
                          for v in values
                          if isinstance(v, ast.Constant) and v.value in names]
        if isinstance(node, ast.MatchValue) and isinstance(node.value, ast.Constant) \
                and node.value.value in names:
            found.append(f"{path.name}:{node.lineno} matches {node.value.value!r}")
    return found


def test_no_recipe_branches_on_a_code_name():
    assert sorted(RECIPES.glob("*.py"))
    problems = [p for path in sorted(RECIPES.glob("*.py")) for p in _branches_on_code_names(path)]
    assert problems == []


def test_the_check_finds_such_a_branch(tmp_path):
    branch = tmp_path / "branch.py"
    branch.write_text('def f(code):\n    if code == "espresso":\n        return 1\n'
                      '    return code in ("vasp", "x")\n')
    assert _branches_on_code_names(branch) == ["branch.py:2 compares with 'espresso'",
                                               "branch.py:4 compares with 'vasp'"]
