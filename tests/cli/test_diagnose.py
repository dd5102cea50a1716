"""``matdx diagnose DIR --code CODE``: on a run the real pw.x failed, and on recorded VASP
outputs (custodian's handlers)."""

from __future__ import annotations

import json

import pytest
from ase.build import bulk

from matdx.codes.base import run_calculation
from matdx.codes.errors import CalculationFailed, SCFError
from matdx.codes.espresso import EspressoTemplate
from tests.codes.helpers import FIXTURES, profile_for, require
from tests.conftest import matdx_cli

SI = {"system": {"ecutwfc": 20.0}, "kpoints": {"density": 2.5},
      "pseudopotentials": {"Si": "Si.pbe-rrkj.UPF"},
      "electrons": {"electron_maxstep": 3}}


@pytest.mark.programs
def test_a_real_pw_x_run_out_of_scf_steps(tmp_path):
    require("pw.x")
    template = EspressoTemplate()
    with pytest.raises(SCFError):
        run_calculation(template, profile_for(template), tmp_path / "run", bulk("Si"), SI,
                        "static")
    done = matdx_cli("diagnose", str(tmp_path / "run"), "--code", "espresso", "--format",
                     "json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report) >= {"code", "completed", "errors", "correction", "results"}
    assert report["code"] == "espresso" and report["completed"] is True
    assert report["results"]["scf_converged"] is False
    [error] = report["errors"]
    assert error["name"] == "scf_unconverged" and error["kind"] == "numerical"
    updates = report["correction"]["parameter_updates"]["electrons"]
    assert updates["electron_maxstep"] > 3
    text = matdx_cli("diagnose", str(tmp_path / "run"), "--code", "espresso")
    assert "error scf_unconverged [numerical]" in text.stdout
    assert "correction by scf_unconverged" in text.stdout


def test_recorded_vasp_output_through_custodian():
    done = matdx_cli("diagnose", str(FIXTURES / "vasp" / "large_cell_real_optlay"), "--code",
                     "vasp", "--format", "json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [(e["name"], e["kind"]) for e in report["errors"]] == [
        ("custodian.VaspErrorHandler", "input")]
    assert report["correction"]["errors"] == ["real_optlay"]
    assert report["correction"]["parameter_updates"] == {"incar": {"LREAL": False}}


def test_bad_code_and_directory_are_refused(tmp_path):
    done = matdx_cli("diagnose", str(tmp_path), "--code", "nosuch")
    assert done.returncode == 2 and "--code" in done.stderr
    done = matdx_cli("diagnose", str(tmp_path / "missing"), "--code", "vasp")
    assert done.returncode == 2 and "DIR" in done.stderr


@pytest.mark.programs
@pytest.mark.slow
def test_a_finished_pw_x_run_that_an_after_the_run_check_refuses(tmp_path):
    """Two Al atoms with fixed occupations: pw.x finishes, the bands overlap (a metal)."""
    require("pw.x")
    template = EspressoTemplate()
    with pytest.raises(CalculationFailed):
        run_calculation(template, profile_for(template), tmp_path / "run",
                        bulk("Al", "fcc", a=4.05).repeat((2, 1, 1)),
                        {"system": {"ecutwfc": 15.0}, "kpoints": {"density": 3.0}}, "static")
    done = matdx_cli("diagnose", str(tmp_path / "run"), "--code", "espresso", "--format",
                     "json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["completed"] is True and report["results"]["converged"] is True
    assert [(e["name"], e["kind"]) for e in report["errors"]] == [
        ("fixed_occupations_metal", "input")]
    assert report["correction"]["errors"] == ["metal_with_fixed_occupations"]
    assert report["correction"]["parameter_updates"]["system"]["occupations"] == "smearing"
