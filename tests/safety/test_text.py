"""matdx.safety.text: values with line breaks or control characters never reach a file."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import matdx.safety as safety
from matdx.safety.text import (
    UnsafeValueError,
    check_choice,
    check_line,
    check_tree,
    check_word,
    first_unsafe,
)

BREAKS = ["\n", "\r", "\r\n", "\x0b", "\x0c", "\x85", "\u2028", "\u2029"]
CONTROLS = ["\x00", "\x1b", "\x7f", "\x9b"]


@pytest.mark.parametrize("char", BREAKS + CONTROLS)
def test_line_breaks_and_control_characters_are_refused_with_the_field_named(char):
    with pytest.raises(UnsafeValueError, match=r"^parameters\.pair_style: contains") as info:
        check_line(f"eam{char}shell rm -rf ~", "parameters.pair_style")
    assert info.value.field == "parameters.pair_style"
    assert "position 3" in info.value.reason


@pytest.mark.parametrize("text", ["eam/alloy", "Cu_u3.eam", "a\tb", "Å 300 K", ""])
def test_ordinary_text_passes_unchanged(text):
    assert check_line(text, "f") is text
    assert first_unsafe(text) is None


def test_non_text_is_refused():
    with pytest.raises(UnsafeValueError, match="expected text, got int"):
        check_line(3, "f")


def test_words_follow_the_allow_list():
    assert check_word("Cu.pbe-dn-kjpaw_psl.1.0.0.UPF", "pseudo") == "Cu.pbe-dn-kjpaw_psl.1.0.0.UPF"
    for bad in ["two words", "semi;colon", "$(id)", "", "quote'"]:
        with pytest.raises(UnsafeValueError, match="is not one word"):
            check_word(bad, "pseudo")


def test_choices_name_the_accepted_tokens():
    assert check_choice("scf", "calculation", {"scf", "relax"}) == "scf"
    with pytest.raises(UnsafeValueError, match=r"calculation: 'nscf' is not one of 'relax', 'scf'"):
        check_choice("nscf", "calculation", {"scf", "relax"})


def test_trees_are_walked_with_the_path_of_the_bad_value():
    good = {"control": {"calculation": "scf", "nstep": 50, "tprnfor": True}, "list": ["a", 1.5]}
    assert check_tree(good, "parameters") is good
    with pytest.raises(UnsafeValueError, match=r"^parameters\.system\.list\[1\]: contains"):
        check_tree({"system": {"list": ["ok", "x\ny"]}}, "parameters")
    with pytest.raises(UnsafeValueError, match=r"key 'ecut\\nwfc'"):
        check_tree({"ecut\nwfc": 30}, "parameters")
    with pytest.raises(UnsafeValueError, match="key 3 is not text"):
        check_tree({3: "x"}, "parameters")


@pytest.mark.parametrize("path", sorted(Path(safety.__file__).parent.glob("*.py")),
                         ids=lambda p: p.name)
def test_safety_is_a_leaf(path):
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module
                 else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
        assert not [n for n in names if n.startswith("matdx.")], f"{path.name} imports {names}"


def test_docstring_examples():
    import doctest

    import matdx.safety.text as text

    result = doctest.testmod(text, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


def test_check_tokens_holds_every_token_to_the_allow_list():
    import re

    from matdx.safety.text import check_tokens

    token = re.compile(r"[a-z/*]+")
    assert check_tokens("eam/alloy * *", "pair_style", token, "a-z / *") == "eam/alloy * *"
    with pytest.raises(UnsafeValueError, match=r"pair_style: token '\$x'"):
        check_tokens("eam $x", "pair_style", token, "a-z / *")
    with pytest.raises(UnsafeValueError, match="pair_style: is empty"):
        check_tokens("   ", "pair_style", token, "a-z / *")


def test_check_keys_checks_names_at_every_depth_and_forbidden_characters():
    from matdx.safety.text import check_keys

    tree = {"SCF": {"OT": {"MINIMIZER": "CG"}}, "LIST": [{"A": "x"}]}
    assert check_keys(tree, "input") is tree
    with pytest.raises(UnsafeValueError, match=r"input\.SCF: key 'OT X' is not one word"):
        check_keys({"SCF": {"OT X": 1}}, "input")
    with pytest.raises(UnsafeValueError, match=r"incar\.ALGO: 'Fast; NELM=1' contains ';'"):
        check_keys({"ALGO": "Fast; NELM=1"}, "incar", forbidden=";")
    with pytest.raises(UnsafeValueError, match="line break"):
        check_keys({"A": ["ok", "no\n"]}, "incar")
