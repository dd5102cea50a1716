"""Monitors act while a program runs (compute side): a frozen run is killed early, pw.x is asked
to stop cleanly before its time limit and continues from its restart files, and a runaway SCF
is stopped and rerun with slower mixing.

The frozen-run tests use a shell process that prints and then hangs (the monitor is the same
for every program); the Quantum ESPRESSO tests run the real ``pw.x`` 6.7 from Debian on two
atoms.
"""

from __future__ import annotations

import os
import time

import pytest
from ase.build import bulk

from matdx.codes.base import run_calculation
from matdx.codes.errors import CalculationFailed
from matdx.codes.espresso import DEFAULT_PSEUDO_DIR, EspressoTemplate
from matdx.codes.execution import execute, read_execution
from matdx.codes.handlers import Interrupted
from matdx.codes.monitors import FrozenOutput, StopFileBeforeLimit
from tests.codes.helpers import profile_for, require

SHELL = "/bin/sh"


def _run(tmp_path, script: str, monitors, timeout_s: float | None = 60.0):
    return execute([SHELL, "-c", script], tmp_path, env=dict(os.environ), stdout="out",
                   stderr="err", timeout_s=timeout_s, monitors=monitors, poll_s=0.2, grace_s=2)


def test_a_frozen_program_is_stopped_early_and_the_reason_recorded(tmp_path):
    began = time.monotonic()
    record = _run(tmp_path, "echo started; exec sleep 120", [FrozenOutput(("out",), 1.5)])
    assert time.monotonic() - began < 30  # not the 60 s timeout
    assert record.stopped_by == "frozen_output" and not record.timed_out
    assert record.signal == "SIGTERM"
    [action] = read_execution(tmp_path).monitor_actions
    assert action["monitor"] == "frozen_output" and action["stop"] is True
    assert "no change in out" in action["reason"]
    handler = Interrupted()
    assert handler.detect(tmp_path) and handler.kind_of(tmp_path) == "infrastructure"
    assert "stopped by the frozen_output monitor" in handler.cause(tmp_path)[0]


def test_a_program_that_keeps_writing_is_left_alone(tmp_path):
    script = "i=0; while [ $i -lt 15 ]; do echo $i; sleep 0.2; i=$((i+1)); done"
    record = _run(tmp_path, script, [FrozenOutput(("out",), 1.5)])
    assert record.returncode == 0 and record.stopped_by is None
    assert record.monitor_actions == []


def test_the_stop_file_is_written_once_before_the_limit(tmp_path):
    script = "while [ ! -e STOP ]; do sleep 0.1; done; echo stopped cleanly"
    began = time.monotonic()
    record = _run(tmp_path, script, [StopFileBeforeLimit(4.0, 2.0, "STOP")], timeout_s=4.0)
    assert 1.5 < time.monotonic() - began < 4.0
    assert record.returncode == 0 and not record.timed_out and record.stopped_by is None
    assert (tmp_path / "out").read_text() == "stopped cleanly\n"
    [action] = record.monitor_actions
    assert action["monitor"] == "walltime_approaching" and action["stop"] is False


@pytest.mark.parametrize(
    ("monitor", "field"),
    [
        (lambda: FrozenOutput(("out",), 0), "stall_s"),
        (lambda: StopFileBeforeLimit(0, 1, "STOP"), "limit_s"),
        (lambda: StopFileBeforeLimit(10, 1, "../STOP"), "stop_file"),
    ],
)
def test_bad_monitor_settings_name_the_field(monitor, field):
    with pytest.raises(ValueError, match=field):
        monitor()


@pytest.fixture(scope="module")
def template() -> EspressoTemplate:
    require("pw.x", DEFAULT_PSEUDO_DIR)
    return EspressoTemplate()


@pytest.mark.programs
@pytest.mark.slow
def test_pw_asked_to_stop_before_its_limit_continues_from_its_restart_files(template,
                                                                             tmp_path):
    """A slow SCF (mixing 0.01, conv_thr 1e-13) with a 15 s limit: ``pwscf.EXIT`` is written
    3 s before it, pw.x saves the density and stops by itself, and the next attempt continues
    with restart_mode='restart' (with normal mixing, to finish quickly)."""
    profile = profile_for(template)
    slow = {"system": {"ecutwfc": 25.0}, "kpoints": {"density": 6.0},
            "electrons": {"conv_thr": 1e-13, "mixing_beta": 0.01, "electron_maxstep": 5000}}
    silicon = bulk("Si", "diamond", a=5.43)
    with pytest.raises(CalculationFailed) as info:
        run_calculation(template, profile, tmp_path / "1", silicon, slow, "static",
                        timeout_s=15.0)
    text = (tmp_path / "1" / "pw.out").read_text()
    record = read_execution(tmp_path / "1")
    assert "Program stopped by user request" in text, text[-2000:]
    assert not record.timed_out and record.monitor_actions[0]["monitor"] == "walltime_approaching"
    assert (tmp_path / "1" / "out" / "pwscf.save" / "charge-density.dat").is_file()
    failure = info.value
    assert failure.handlers == ("walltime",) and failure.kind == "resources"
    resumed = failure.correction.apply(slow)
    assert resumed["control"]["restart_mode"] == "restart"
    resumed["electrons"] = {**resumed["electrons"], "mixing_beta": 0.7}
    result = run_calculation(template, profile, tmp_path / "2", silicon, resumed, "static")
    assert result.converged
    assert "restart" in (tmp_path / "2" / "pw.in").read_text()


@pytest.mark.programs
@pytest.mark.slow
def test_a_runaway_scf_is_stopped_and_rerun_with_slower_mixing(template, tmp_path):
    """Al with mixing_beta 20 and a short mixing history: the estimated accuracy runs away
    (pw.x would die later in c_bands, a diagonalisation error); the monitor stops it and the
    SCF handler restarts the mixing at 0.35."""
    profile = profile_for(template)
    # 6 k-points per Å⁻¹ make an iteration take long enough (~0.1-0.5 s) for the monitor's
    # 1 s round to stop the runaway (from iteration 11) before pw.x dies (iteration ~19).
    runaway = {"system": {"ecutwfc": 20.0, "occupations": "smearing", "degauss": 0.02},
               "kpoints": {"density": 6.0},
               "electrons": {"mixing_beta": 20.0, "mixing_ndim": 2}}
    aluminium = bulk("Al", "fcc", a=4.05)
    with pytest.raises(CalculationFailed) as info:
        run_calculation(template, profile, tmp_path / "1", aluminium, runaway, "static")
    record = read_execution(tmp_path / "1")
    assert record.stopped_by == "scf_diverging", record
    assert "Error in routine c_bands" not in (tmp_path / "1" / "pw.out").read_text()
    failure = info.value
    assert failure.handlers[0] == "scf_unconverged" and failure.kind == "numerical"
    assert "diverging" in failure.correction.description
    fixed = failure.correction.apply(runaway)
    assert fixed["electrons"]["mixing_beta"] == 0.35
    result = run_calculation(template, profile, tmp_path / "2", aluminium, fixed, "static")
    assert result.converged

