"""run_calculation, diagnose and explain_failure with a scripted stand-in program.

The stand-in is the Python interpreter running a script the template writes, so these tests
exercise the orchestration (inputs, argv, files, timeout, handlers, budgets, error classes)
without a simulation code; the real programs are exercised in the per-code test modules.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from matdx.codes.base import (
    Template,
    diagnose,
    explain_failure,
    read_parameters_record,
    run_calculation,
    write_parameters_record,
)
from matdx.codes.errors import (
    CalculationFailed,
    InputError,
    ProgramNotFound,
    ReadError,
    SCFError,
    UnsupportedCalculation,
)
from matdx.codes.execution import Profile, read_execution
from matdx.codes.handlers import Correction, ErrorHandler, Interrupted, OutOfMemory, read_text
from matdx.codes.results import CalculationResult


class MixingHandler(ErrorHandler):
    name = "scf_unconverged"
    kind = "numerical"
    error_class = SCFError
    default_max_corrections = 2

    def detect(self, directory: Path) -> bool:
        return "SCF NOT CONVERGED" in read_text(directory / "out")

    def correct(self, directory: Path, parameters: Mapping[str, Any], atoms: Atoms) -> Correction:
        beta = parameters.get("beta", 0.7)
        return Correction(self.name, f"beta {beta} -> {beta / 2}", {"beta": beta / 2})


class Scripted(Template):
    """Runs ``parameters['script']`` with Python; it writes ``result.json``."""

    name = "scripted"
    calculations: ClassVar[frozenset[str]] = frozenset({"static"})
    stdout, stderr = "out", "err"
    default_binary: ClassVar[tuple[str, ...]] = (sys.executable,)

    def default_handlers(self) -> tuple[ErrorHandler, ...]:
        return (OutOfMemory(("out", "err")), MixingHandler(), Interrupted())

    def arguments(self) -> list[str]:
        return ["script.py"]

    def write_input(self, directory, atoms, parameters, calculation, *, profile=None):
        if "script" not in parameters:
            raise InputError("parameters['script'] is required")
        (directory / "script.py").write_text(parameters["script"])
        write_parameters_record(directory, self.name, calculation, dict(parameters))

    def read_results(self, directory):
        path = directory / "result.json"
        if not path.is_file():
            raise ReadError(directory, "result.json is missing", path=path)
        data = json.loads(path.read_text())
        record = read_parameters_record(directory) or {}
        return CalculationResult(
            code=self.name,
            calculation=record.get("calculation", "static"),
            structure=bulk("Cu"),
            converged=data["converged"],
            scf_converged=data["converged"],
            energy=data["energy"],
            parameters=record.get("parameters", {}),
        )


GOOD = "import json; json.dump({'energy': -1.5, 'converged': True}, open('result.json', 'w'))"
SCF_FAIL = (
    "import json; print('SCF NOT CONVERGED');"
    "json.dump({'energy': None, 'converged': False}, open('result.json', 'w'))"
)


@pytest.fixture
def template() -> Scripted:
    return Scripted()


@pytest.fixture
def profile(template: Scripted) -> Profile:
    return template.profile()


def test_success_returns_the_result_and_records_everything(template, profile, tmp_path):
    atoms = bulk("Cu")
    parameters = {"script": GOOD}
    result = run_calculation(template, profile, tmp_path / "run", atoms, parameters, "static")
    assert result.energy == -1.5 and result.converged
    assert result.walltime_s is not None and result.walltime_s > 0
    assert parameters == {"script": GOOD}
    record = read_execution(tmp_path / "run")
    assert record is not None and record.argv == [sys.executable, "script.py"]
    assert record.returncode == 0


def test_a_used_directory_is_refused(template, profile, tmp_path):
    run_calculation(template, profile, tmp_path, bulk("Cu"), {"script": GOOD}, "static")
    with pytest.raises(InputError, match="already holds a run"):
        run_calculation(template, profile, tmp_path, bulk("Cu"), {"script": GOOD}, "static")


def test_setup_errors_come_before_anything_is_written(template, tmp_path):
    with pytest.raises(UnsupportedCalculation):
        run_calculation(template, template.profile(), tmp_path / "a", bulk("Cu"), {}, "md")
    with pytest.raises(ProgramNotFound):
        run_calculation(
            template, Profile("no-such-binary-q"), tmp_path / "b", bulk("Cu"), {"script": GOOD},
            "static",
        )
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_scf_failure_raises_scf_error_with_correction(template, profile, tmp_path):
    parameters = {"script": SCF_FAIL, "beta": 0.4}
    with pytest.raises(SCFError) as info:
        run_calculation(template, profile, tmp_path, bulk("Cu"), parameters, "static")
    err = info.value
    assert err.kind == "numerical" and err.handlers == ("scf_unconverged",)
    assert err.correction is not None and err.correction.parameter_updates == {"beta": 0.2}
    assert diagnose(template, tmp_path, parameters, bulk("Cu")) == err.correction


def test_spent_budget_gives_no_correction(template, profile, tmp_path):
    parameters = {"script": SCF_FAIL}
    with pytest.raises(SCFError) as info:
        run_calculation(
            template, profile, tmp_path, bulk("Cu"), parameters, "static",
            applied={"scf_unconverged": 2},
        )
    assert info.value.correction is None
    assert "budget of 2 corrections spent" in info.value.reason
    assert diagnose(template, tmp_path, parameters, bulk("Cu"), applied={"scf_unconverged": 1})


def test_timeout_is_a_resources_failure(template, profile, tmp_path):
    parameters = {"script": "import time; time.sleep(30)"}
    with pytest.raises(CalculationFailed) as info:
        run_calculation(template, profile, tmp_path, bulk("Cu"), parameters, "static", timeout_s=1)
    err = info.value
    assert err.kind == "resources" and err.handlers == ("walltime",)
    assert err.correction is not None and err.correction.resources == {"walltime_factor": 1.5}


def test_crash_without_output_is_a_read_error(template, profile, tmp_path):
    parameters = {"script": "raise SystemExit(7)"}
    with pytest.raises(ReadError) as info:
        run_calculation(template, profile, tmp_path, bulk("Cu"), parameters, "static")
    # nothing recognised it: a missing output means the program did not finish writing
    assert info.value.kind == "infrastructure" and info.value.handlers == ()
    assert info.value.correction is None and "result.json is missing" in info.value.reason


def test_nonzero_exit_with_a_converged_result_still_fails(template, profile, tmp_path):
    parameters = {"script": GOOD + "; raise SystemExit(5)"}
    with pytest.raises(CalculationFailed, match="exited with code 5") as info:
        run_calculation(template, profile, tmp_path, bulk("Cu"), parameters, "static")
    assert info.value.kind == "program" and type(info.value) is CalculationFailed


def test_out_of_memory_wins_over_the_kill_it_caused(template, profile, tmp_path):
    script = "import os, signal; print('std::bad_alloc'); os.kill(os.getpid(), signal.SIGKILL)"
    with pytest.raises(CalculationFailed) as info:
        run_calculation(template, profile, tmp_path, bulk("Cu"), {"script": script}, "static")
    err = info.value
    assert type(err) is CalculationFailed  # the diagnosis, not the missing output, decides
    assert err.handlers == ("out_of_memory", "walltime")
    assert err.correction is not None and err.correction.handler == "out_of_memory"
    assert err.correction.resources == {"memory_factor": 2.0}  # one rank: more memory
    assert err.kind == "resources"


def test_explain_failure_on_a_dead_directory(template, profile, tmp_path):
    with pytest.raises(SCFError):
        run_calculation(template, profile, tmp_path, bulk("Cu"), {"script": SCF_FAIL}, "static")
    err = explain_failure(template, tmp_path, {"script": SCF_FAIL}, bulk("Cu"))
    assert isinstance(err, SCFError) and err.correction is not None
    assert re.match(r"scf_unconverged: beta 0\.7 -> 0\.35", err.reason)


def test_inputs_are_not_mutated(template, profile, tmp_path):
    atoms = bulk("Cu")
    before = atoms.copy()
    parameters = {"script": GOOD, "nested": {"a": [1, 2]}}
    run_calculation(template, profile, tmp_path, atoms, parameters, "static")
    assert parameters == {"script": GOOD, "nested": {"a": [1, 2]}}
    assert atoms == before and np.array_equal(atoms.positions, before.positions)
