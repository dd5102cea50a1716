"""deep_merge, Correction and the handlers shared by all codes."""

from __future__ import annotations

import json
import sys

import pytest
from ase.build import bulk

from matdx.codes.execution import EXECUTION_FILE, execute
from matdx.codes.handlers import Correction, Interrupted, OutOfMemory, deep_merge


def test_deep_merge_is_recursive_and_never_mutates():
    base = {"electrons": {"conv_thr": 1e-8, "mixing": {"beta": 0.7}}, "kpoints": [1, 2]}
    updates = {"electrons": {"mixing": {"beta": 0.3}, "maxstep": 200}, "kpoints": [3]}
    merged = deep_merge(base, updates)
    assert merged == {
        "electrons": {"conv_thr": 1e-8, "mixing": {"beta": 0.3}, "maxstep": 200},
        "kpoints": [3],
    }
    assert base == {"electrons": {"conv_thr": 1e-8, "mixing": {"beta": 0.7}}, "kpoints": [1, 2]}
    merged["electrons"]["mixing"]["beta"] = 0.0
    assert updates["electrons"]["mixing"]["beta"] == 0.3


def test_deep_merge_keeps_none_as_unset_marker():
    assert deep_merge({"incar": {"NGX": 20}}, {"incar": {"NGX": None}}) == {"incar": {"NGX": None}}


def test_correction_apply_and_to_dict():
    atoms = bulk("Cu", "fcc", a=3.6)
    correction = Correction(
        "ionic_unconverged",
        "restart",
        {"control": {"nstep": 100}},
        restart_structure=atoms,
        resources={"walltime_factor": 1.5},
    )
    parameters = {"control": {"nstep": 50, "prefix": "x"}}
    assert correction.apply(parameters) == {"control": {"nstep": 100, "prefix": "x"}}
    assert parameters == {"control": {"nstep": 50, "prefix": "x"}}
    data = json.loads(json.dumps(correction.to_dict()))
    assert data["restart_structure"]["symbols"] == ["Cu"]
    assert data["resources"] == {"walltime_factor": 1.5}


def test_correction_rejects_unknown_resources():
    with pytest.raises(ValueError, match="unknown keys"):
        Correction("x", "y", resources={"gpus": 2})


def test_max_corrections_is_validated():
    with pytest.raises(ValueError, match="max_corrections"):
        OutOfMemory(("out",), max_corrections=-1)


@pytest.mark.parametrize(
    "text",
    [
        "slurmstepd: error: Detected 1 oom-kill event(s) in StepId=1.0",
        "forrtl: severe (41): insufficient virtual memory",
        "terminate called after throwing an instance of 'std::bad_alloc'",
        "Operating system error: Cannot allocate memory",
    ],
)
def test_out_of_memory_markers(tmp_path, text):
    (tmp_path / "err").write_text(f"line\n{text}\n")
    handler = OutOfMemory(("out", "err"))
    assert handler.detect(tmp_path)
    correction = handler.correct(tmp_path, {}, bulk("Cu"))
    assert correction.resources == {"ranks_factor": 0.5}
    assert handler.kind == "resources"


def test_out_of_memory_ignores_ordinary_memory_reports(tmp_path):
    (tmp_path / "out").write_text("Estimated max dynamical RAM per process > 23.98 MB\n")
    assert not OutOfMemory(("out",)).detect(tmp_path)


def test_out_of_memory_on_one_rank_asks_for_memory(tmp_path):
    execute([sys.executable, "-c", "print('MemoryError')"], tmp_path, env={}, stdout="out",
            stderr="err", ranks=1)
    assert OutOfMemory(("out",)).correct(tmp_path, {}, bulk("Cu")).resources == {
        "memory_factor": 2.0
    }


def test_interrupted_by_timeout(tmp_path):
    execute([sys.executable, "-c", "import time; time.sleep(30)"], tmp_path, env={},
            stdout="o", stderr="e", timeout_s=0.5, grace_s=0.5)
    handler = Interrupted()
    assert handler.detect(tmp_path)
    correction = handler.correct(tmp_path, {}, bulk("Cu"))
    assert correction.resources == {"walltime_factor": 1.5}
    assert "timeout" in correction.description


def test_interrupted_by_a_dead_node(tmp_path):
    """An execution record that was never completed: the job died with its node."""
    record = {
        "argv": ["pw.x"], "ranks": 1, "threads": 1, "timeout_s": None, "host": "n1",
        "started": "2025-01-01T00:00:00+00:00",
    }
    (tmp_path / EXECUTION_FILE).write_text(json.dumps(record))
    handler = Interrupted()
    assert handler.detect(tmp_path)
    assert handler.correct(tmp_path, {}, bulk("Cu")).resources == {}


def test_interrupted_ignores_programs_that_ended_by_themselves(tmp_path):
    execute([sys.executable, "-c", "raise SystemExit(2)"], tmp_path, env={}, stdout="o",
            stderr="e")
    assert not Interrupted().detect(tmp_path)
    assert not Interrupted().detect(tmp_path / "missing")
