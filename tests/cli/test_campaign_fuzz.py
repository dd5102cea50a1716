"""Mutated campaign files never produce a traceback or a partial write (issue 13 point 4).

Hypothesis mutates a valid campaign file: random bytes (non-UTF-8 included), YAML structure
(deep nesting, alias bombs, duplicate keys), wrong types, huge sizes, Rich markup and unicode
in values. Each file is submitted with ``matdx submit`` (in this process, as typed) to a store
that already holds one campaign: the command either succeeds or exits 2 with one error line,
and a refused file leaves every table of the store as it was.

The default run tries ``MATDX_FUZZ_EXAMPLES`` files (500); ``MATDX_FUZZ_FULL=1`` tries 5,000.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matdx.store.models import Base
from matdx.store.store import Store
from tests.cli.helpers import run_matdx

EXAMPLES = 5_000 if os.environ.get("MATDX_FUZZ_FULL") == "1" else \
    int(os.environ.get("MATDX_FUZZ_EXAMPLES", "500"))

BASE = """\
name: fuzz
description: a campaign to mutate
executor: {type: local, workers: 1}
tags: [fuzz]
studies:
  - recipe: static
    code: emt
    structures:
      - bulk: [Cu]
        repeat: [1, 1, 1]
      - file: data[raw]/Cu.cif
  - recipe: md
    structures: [{bulk: [Al], cubic: true}]
    settings: {steps: 100, timestep_fs: 2, sample_every: 10}
    sweep: {temperature_K: [300, 600]}
"""

MARKUP = ["[/bold]", "[red]x[/red]", "[link=http://x]y", "data[raw]/Cu.cif", "[", "]]", "\\["]
ODD_VALUES = [True, False, None, 0, -1, 1e308, -1e-308, float("inf"), float("nan"), "", "null",
              "1e9", [], {}, [[[]]], "Xx", "é", "\u202e", "\x00", 10**30, "~"]
BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
name: *g
recipe: static
structures: [{bulk: [Cu]}]
"""


def _yaml_scalar(value: object) -> str:
    import json

    if isinstance(value, float) and value != value:
        return ".nan"
    if value == float("inf"):
        return ".inf"
    return json.dumps(value, ensure_ascii=False)


lines = BASE.splitlines()
values = st.one_of(
    st.sampled_from(ODD_VALUES).map(_yaml_scalar),
    st.sampled_from(MARKUP).map(_yaml_scalar),
    st.text(max_size=30).map(_yaml_scalar),
    st.integers().map(str),
    st.floats().map(_yaml_scalar),
    st.integers(1, 400).map(lambda n: "[" * n + "]" * n),
    st.integers(1, 3000).map(lambda n: "[" + ", ".join(["1"] * n) + "]"),
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["value", "line", "bytes", "insert", "bomb", "duplicate",
                                 "truncate"]))
    text = list(lines)
    if kind == "value":
        k = draw(st.sampled_from([i for i, line in enumerate(text) if ":" in line]))
        key = text[k].split(":", 1)[0]
        text[k] = f"{key}: {draw(values)}"
    elif kind == "line":
        k = draw(st.integers(0, len(text) - 1))
        text[k] = draw(st.text(max_size=40)).replace("\n", " ")
    elif kind == "insert":
        k = draw(st.integers(0, len(text)))
        indent = draw(st.sampled_from(["", "  ", "    ", "      "]))
        text.insert(k, f"{indent}{draw(st.sampled_from(['x', 'name', 'repeat', 'a']))}: "
                       f"{draw(values)}")
    elif kind == "bomb":
        return BOMB.encode()
    elif kind == "duplicate":
        k = draw(st.integers(0, len(text) - 1))
        text.insert(k, text[k])
    elif kind == "truncate":
        return "\n".join(text)[: draw(st.integers(0, len(BASE)))].encode()
    data = bytearray("\n".join(text).encode())
    if kind == "bytes":
        for _ in range(draw(st.integers(1, 8))):
            where = draw(st.integers(0, len(data) - 1))
            data[where] = draw(st.integers(0, 255))
    return bytes(data)


def _counts(home: Path) -> dict[str, int]:
    """Rows of every table (read with sqlite3: the CLI under test opens the store itself)."""
    with contextlib.closing(sqlite3.connect(home / "store.sqlite")) as db:
        return {table.name: db.execute(f'SELECT count(*) FROM "{table.name}"').fetchone()[0]
                for table in Base.metadata.sorted_tables}


@pytest.fixture(scope="module")
def fuzz_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "data[raw]").mkdir()
    cif = Path(__file__).parents[1] / "workflows" / "data" / "Cu.cif"
    (folder / "data[raw]" / "Cu.cif").write_text(cif.read_text())
    Store(folder / "home").dispose()
    return folder


def test_mutated_campaign_files_give_one_line_or_succeed(fuzz_home, capsys, monkeypatch):
    monkeypatch.delenv("MATDX_STORE", raising=False)
    monkeypatch.delenv("MATDX_USER", raising=False)  # SQLite: the OS account submits
    home = fuzz_home / "home"
    tried = {"n": 0, "refused": 0}

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(mutated())
    def check(content: bytes) -> None:
        path = fuzz_home / "campaign.yaml"
        path.write_bytes(content)
        before = _counts(home)
        done = run_matdx(capsys, monkeypatch, "submit", str(path), "--home", str(home))
        tried["n"] += 1
        assert "Traceback" not in done.stderr + done.stdout
        assert done.returncode in (0, 2), done.stderr
        if done.returncode == 2:
            tried["refused"] += 1
            assert done.stderr.startswith("error: ")
            assert _counts(home) == before  # nothing half-written

    check()
    print(f"{tried['n']} mutated campaign files: {tried['refused']} refused with one error, "
          f"{tried['n'] - tried['refused']} submitted; no traceback, no partial write")
