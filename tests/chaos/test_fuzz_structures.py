"""Property-based fuzzing of structure files through ``matdx submit``.

Hypothesis mutates valid CIF, POSCAR and extended XYZ files (the seeds in
``tests/workflows/data``): random bytes (non-UTF-8 included), truncation, unicode and control
characters, huge numbers, NaN and infinity, partial occupancies, lines dropped (missing fields)
or repeated. Each file is the structure of a one-study campaign submitted with ``matdx submit``
(in this process, as typed; nothing runs: submit only reads, validates and plans) into a store
that already holds one campaign. Either it is submitted, or the command exits 2 with one error
line naming the structure file, and the store is unchanged (its campaign, workflow and job rows
counted before and after).

CI runs ``EXAMPLES`` files per format; ``MATDX_CHAOS_FULL=1`` runs 10,000 in all.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matdx.store.store import Store
from tests.chaos.conftest import FULL
from tests.cli.helpers import run_matdx

DATA = Path(__file__).parents[1] / "workflows" / "data"
SEEDS = {"cif": "Cu.cif", "poscar": "Al.poscar", "extxyz": "NiCu.extxyz"}
FORMATS = {"cif": "cif", "poscar": "vasp", "extxyz": "extxyz"}
EXAMPLES = 3334 if FULL else 25  # per format: ≥ 10,000 in all when full

CAMPAIGN = """\
name: fuzz-{n}
executor: {{type: local, workers: 1}}
recipe: static
code: emt
structures:
  - file: {name}
    format: {format}
"""

ODD = ["nan", "NaN", "inf", "-inf", "1e308", "1e999", "-1e-320", "9" * 400, "0", "-0",
       "1e30", "1e-30", "?", ".", "", "é", "\u202e", "\x00", "\ufeff", "１", "0x1p3", "1_0"]
SYMBOLS = ["Xx", "X", "", "H", "Og", "cu", "CU", "Cu1+", "Ü", "Q"]


def tokens(text: str) -> list[tuple[int, int]]:
    """Spans of the whitespace-separated tokens of ``text``."""
    spans, start = [], None
    for k, char in enumerate(text + " "):
        if char.isspace():
            if start is not None:
                spans.append((start, k))
                start = None
        elif start is None:
            start = k
    return spans


@st.composite
def mutated(draw: st.DrawFn, seed: str) -> bytes:
    """One mutation (or a few) of the seed file's text."""
    text = seed
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["number", "symbol", "token", "drop", "repeat", "truncate",
                                     "bytes", "unicode", "occupancy", "count"]))
        lines = text.splitlines()
        spans = tokens(text)
        if kind in ("number", "symbol", "token") and spans:
            start, end = draw(st.sampled_from(spans))
            new = {"number": st.one_of(st.sampled_from(ODD), st.floats().map(repr),
                                       st.integers().map(str)),
                   "symbol": st.sampled_from(SYMBOLS),
                   "token": st.text(max_size=12)}[kind]
            text = text[:start] + draw(new) + text[end:]
        elif kind == "drop" and lines:
            k = draw(st.integers(0, len(lines) - 1))
            text = "\n".join(lines[:k] + lines[k + 1 :])
        elif kind == "repeat" and lines:
            k = draw(st.integers(0, len(lines) - 1))
            text = "\n".join(lines[: k + 1] + [lines[k]] * draw(st.integers(1, 50))
                             + lines[k + 1 :])
        elif kind == "truncate":
            text = text[: draw(st.integers(0, len(text)))]
        elif kind == "unicode":
            k = draw(st.integers(0, len(text)))
            text = text[:k] + draw(st.text(min_size=1, max_size=8)) + text[k:]
        elif kind == "occupancy":  # partial occupancies, as each format writes them
            text = (text.replace(" 1\n", f" {draw(st.sampled_from(['0.5', '0.25', '1.5']))}\n")
                    .replace("pos:R:3", "pos:R:3:occupancy:R:1"))
        elif kind == "count" and lines:  # the atom counts of POSCAR and XYZ headers
            k = draw(st.sampled_from([i for i, line in enumerate(lines)
                                      if line.strip().isdigit()] or [0]))
            lines[k] = draw(st.sampled_from(["0", "-1", "99999", "1e9", "2.5", "10000000000"]))
            text = "\n".join(lines)
    data = bytearray(text.encode("utf-8", "surrogatepass"))
    if draw(st.booleans()) and data:
        for _ in range(draw(st.integers(1, 6))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


def rows(home: Path) -> tuple[int, int, int]:
    """Campaigns, workflows and jobs in the store (read with sqlite3, not through matdx)."""
    with contextlib.closing(sqlite3.connect(home / "store.sqlite")) as db:
        return tuple(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                     for table in ("campaigns", "workflows", "jobs"))


@pytest.fixture
def fuzz_home(tmp_path: Path, capsys, monkeypatch) -> Path:
    """A store that already holds one campaign."""
    monkeypatch.delenv("MATDX_STORE", raising=False)
    monkeypatch.delenv("MATDX_USER", raising=False)  # SQLite: the OS account submits
    home = tmp_path / "home"
    Store(home).dispose()
    (tmp_path / "seed.cif").write_text((DATA / "Cu.cif").read_text())
    (tmp_path / "seed.yaml").write_text(CAMPAIGN.format(n="seed", name="seed.cif", format="cif"))
    done = run_matdx(capsys, monkeypatch, "submit", str(tmp_path / "seed.yaml"),
                     "--home", str(home))
    assert done.returncode == 0, done.stderr
    return home


@pytest.mark.timeout(7200)
@pytest.mark.parametrize("kind", sorted(SEEDS))
def test_fuzzed_structure_files_are_submitted_or_refused_naming_the_file(
    kind, fuzz_home, capsys, monkeypatch, ledger
):
    folder = fuzz_home.parent
    seed = (DATA / SEEDS[kind]).read_text()
    tally = {"n": 0, "refused": 0}
    fault = f"fuzz: structure file ({kind})"

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(mutated(seed))
    def check(content: bytes) -> None:
        n = tally["n"]
        name = f"s{n}.{kind}"
        (folder / name).write_bytes(content)
        campaign = folder / f"c{n}.yaml"
        campaign.write_text(CAMPAIGN.format(n=n, name=name, format=FORMATS[kind]))
        before = rows(fuzz_home)
        done = run_matdx(capsys, monkeypatch, "submit", str(campaign), "--home", str(fuzz_home))
        tally["n"] += 1
        assert "Traceback" not in done.stderr + done.stdout, done.stderr
        assert done.returncode in (0, 2), (done.returncode, done.stderr)
        if done.returncode == 2:
            tally["refused"] += 1
            assert done.stderr.startswith("error: "), done.stderr
            assert name in done.stderr, done.stderr  # the error names the file
            assert rows(fuzz_home) == before  # nothing half-written
            ledger.trial(fault, evidence=f"refused: {done.stderr[7:67]}", survived=True)
        else:
            after = rows(fuzz_home)
            assert after[0] == before[0] + 1 and after[2] > before[2]
            ledger.trial(fault, evidence="submitted", survived=True)
        (folder / name).unlink()
        campaign.unlink()

    check()
    print(f"{kind}: {tally['n']} fuzzed files: {tally['refused']} refused naming the file, "
          f"{tally['n'] - tally['refused']} submitted; no traceback, no partial write")
