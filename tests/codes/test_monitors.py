"""Monitors act while a program runs (compute side): a frozen run is killed early, pw.x is asked
to stop cleanly before its time limit and continues from its restart files, and a runaway SCF
is stopped and rerun with slower mixing.

The frozen-run tests use a shell process that prints and then hangs (the monitor is the same
for every program); the Quantum ESPRESSO tests run the real ``pw.x`` 6.7 from Debian on two
atoms, the CP2K test the real CP2K 2023.1 on H2O. VASP cannot run here: its tests use a
recorded VASP run and a stand-in process (see the VASP section).
"""

from __future__ import annotations

import os
import time

import pytest
from ase.build import bulk
from ase.io import read

from matdx.codes.base import run_calculation
from matdx.codes.errors import CalculationFailed
from matdx.codes.espresso import DEFAULT_PSEUDO_DIR, EspressoTemplate
from matdx.codes.execution import execute, read_execution
from matdx.codes.handlers import Interrupted
from matdx.codes.monitors import FrozenOutput, StopFileBeforeLimit
from tests.codes.helpers import FIXTURES, profile_for, require

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



@pytest.mark.programs
@pytest.mark.slow
def test_cp2k_asked_to_stop_before_its_limit_continues_from_its_wavefunction(tmp_path):
    """The real CP2K 2023.1 (Debian): a slow SCF (direct mixing 0.002, EPS_SCF 1e-12) on H2O
    with a 60 s limit. The monitor writes ``cp2k.EXIT`` 30 s before it (CP2K notices the
    file up to ~20 s late); CP2K ends its SCF
    ("terminated by external request"), writes ``cp2k-RESTART.wfn`` and exits by itself. The
    failure is a clean walltime stop (not an SCF failure), and the next attempt continues from
    that wavefunction (with Broyden mixing, to finish quickly) and converges."""
    from ase.build import molecule

    from matdx.codes.cp2k import Cp2kTemplate

    require("cp2k")
    cp2k = Cp2kTemplate()
    profile = profile_for(cp2k)
    water = molecule("H2O")
    water.cell = [6.0, 6.0, 6.0]
    water.center()
    water.pbc = False
    slow = {"cutoff": 300.0, "rel_cutoff": 40.0, "scf_method": "diagonalization",
            "max_scf": 50000, "eps_scf": 1e-12,
            "input": {"FORCE_EVAL": {"DFT": {"SCF": {
                "MIXING": {"METHOD": "DIRECT_P_MIXING", "ALPHA": 0.002}}}}}}
    with pytest.raises(CalculationFailed) as info:
        run_calculation(cp2k, profile, tmp_path / "1", water, slow, "static", timeout_s=60.0)
    first = tmp_path / "1"
    text = (first / "cp2k.out").read_text()
    record = read_execution(first)
    assert "SCF run terminated by external request" in text, text[-2000:]
    assert "PROGRAM ENDED" in text and record.returncode == 0 and not record.timed_out
    assert record.monitor_actions[0]["monitor"] == "walltime_approaching"
    assert (first / "cp2k-RESTART.wfn").is_file()
    failure = info.value
    assert failure.handlers == ("walltime",) and failure.kind == "resources"
    assert "continue from this run's wavefunction" in failure.correction.description
    resumed = failure.correction.apply(slow)
    assert resumed["parent_directory"] == str(first.resolve())
    resumed["input"], resumed["eps_scf"] = {}, 1e-6  # Broyden mixing finishes quickly
    result = run_calculation(cp2k, profile, tmp_path / "2", water, resumed, "static")
    assert result.converged
    second = (tmp_path / "2" / "cp2k.out").read_text()
    assert "SCF_GUESS RESTART" in (tmp_path / "2" / "cp2k.inp").read_text()
    assert "Reading the wavefunction" in second or "restart" in second.lower()


# --------------------------------------------------------------------------- VASP
# VASP cannot run here. The walltime rule is tested on a real recorded VASP relaxation (OUTCAR,
# INCAR, POSCAR, CONTCAR of custodian's test case ``postprocess``, tests/codes/fixtures/vasp,
# MIT licence, see its README), and the clean stop against a stand-in process that replays that
# OUTCAR one ionic step at a time and reads STOPCAR as VASP does.

VASP_RUN = FIXTURES / "vasp" / "postprocess"
_STAND_IN = r"""
import pathlib, re, shutil, sys, time
run = pathlib.Path(sys.argv[1])
steps = re.split(r"(?<=\n)(?=.*LOOP\+)", (run / "OUTCAR.recorded").read_text())
print(" running as a stand-in for VASP", flush=True)
with open("OUTCAR", "w") as outcar:
    for step in steps:
        outcar.write(step)
        outcar.flush()
        print(" ionic step", flush=True)
        if re.search(r"LSTOP\s*=\s*\.TRUE\.", pathlib.Path("STOPCAR").read_text()
                     if pathlib.Path("STOPCAR").exists() else ""):
            break
        time.sleep(float(sys.argv[2]))
shutil.copy(run / "CONTCAR", "CONTCAR")
pathlib.Path("WAVECAR").write_bytes(b"stand-in wavefunctions")
"""


def _vasp_walltime_monitor(directory, limit_s):
    from matdx.codes.vasp import VaspTemplate

    [monitor] = [m for m in VaspTemplate().monitors(directory, {}, limit_s, None)
                 if isinstance(m, StopFileBeforeLimit)]
    return monitor


def test_vasp_stopcar_follows_custodians_rule_on_a_recorded_outcar(tmp_path):
    """Custodian's WalltimeHandler rule: STOPCAR once the time left is below three times the
    longest ionic step so far (10.86 s in the recorded OUTCAR, so 32.6 s) or the margin
    (10 % of 100 s), whichever is larger; OUTCAR is read as it grows."""
    lines = (VASP_RUN / "OUTCAR").read_text().splitlines(keepends=True)
    first_step = next(i for i, line in enumerate(lines) if "LOOP+" in line)
    (tmp_path / "OUTCAR").write_text("".join(lines[:first_step]))
    monitor = _vasp_walltime_monitor(tmp_path, 100.0)
    assert monitor.check(tmp_path, 85.0) is None  # no step finished: margin 10 s
    with (tmp_path / "OUTCAR").open("a") as outcar:
        outcar.write("".join(lines[first_step:]))
    assert monitor.margin(tmp_path) == pytest.approx(3 * 10.86)
    assert monitor.check(tmp_path, 67.0) is None and not (tmp_path / "STOPCAR").exists()
    action = monitor.check(tmp_path, 68.0)
    assert action is not None and action.monitor == "walltime_approaching" and not action.stop
    assert (tmp_path / "STOPCAR").read_text() == "LSTOP = .TRUE.\n"
    assert monitor.check(tmp_path, 69.0) is None  # written once


def test_vasp_stand_in_stops_at_the_stopcar_and_the_next_attempt_continues(tmp_path):
    import shutil
    import sys

    from matdx.codes.base import explain_failure
    from matdx.codes.vasp import VaspTemplate

    run = tmp_path / "run"
    run.mkdir()
    for name in ("INCAR", "KPOINTS", "POSCAR"):
        shutil.copy(VASP_RUN / name, run / name)
    (tmp_path / "OUTCAR.recorded").write_text((VASP_RUN / "OUTCAR").read_text())
    shutil.copy(VASP_RUN / "CONTCAR", tmp_path / "CONTCAR")
    monitor = _vasp_walltime_monitor(run, 36.0)  # 3 × 10.86 s left after the first step
    began = time.monotonic()
    record = execute([sys.executable, "-c", _STAND_IN, str(tmp_path), "0.5"], run,
                     env=dict(os.environ), stdout="vasp.out", stderr="std_err.txt",
                     timeout_s=36.0, monitors=[monitor], poll_s=0.2, grace_s=2)
    assert time.monotonic() - began < 20  # stopped itself long before the 28 steps end
    assert record.returncode == 0 and not record.timed_out and record.stopped_by is None
    [action] = record.monitor_actions
    assert action["monitor"] == "walltime_approaching" and 3.0 < action["elapsed_s"] < 36.0
    steps = (run / "vasp.out").read_text().count("ionic step")
    assert 2 <= steps < 28
    template = VaspTemplate()
    failure = explain_failure(template, run, {}, read(VASP_RUN / "POSCAR"))
    assert failure.handlers == ("walltime",) and failure.kind == "resources"
    correction = failure.correction
    assert "continue from WAVECAR and CONTCAR" in correction.description
    assert correction.parameter_updates == {"parent_directory": str(run.resolve())}
    assert correction.resources == {"walltime_factor": 1.5}
    assert correction.restart_structure is not None
    assert len(correction.restart_structure) == len(read(VASP_RUN / "CONTCAR"))


def test_a_frozen_vasp_gets_custodians_frozen_job_correction(tmp_path):
    """The frozen-output monitor kills a stand-in that prints and hangs; custodian's
    FrozenJobErrorHandler then turns the recorded run's ALGO Fast into Normal."""
    import shutil

    from matdx.codes.base import explain_failure
    from matdx.codes.vasp import VaspTemplate

    for name in ("INCAR", "KPOINTS", "POSCAR", "CONTCAR"):
        shutil.copy(VASP_RUN / name, tmp_path / name)
    record = execute([SHELL, "-c", "echo ' running as a stand-in for VASP'; exec sleep 120"],
                     tmp_path, env=dict(os.environ), stdout="vasp.out", stderr="std_err.txt",
                     timeout_s=60.0, monitors=[FrozenOutput(("vasp.out",), 1.5)], poll_s=0.2,
                     grace_s=2)
    assert record.stopped_by == "frozen_output"
    failure = explain_failure(VaspTemplate(), tmp_path, {}, read(VASP_RUN / "POSCAR"))
    assert failure.handlers[0] == "custodian.FrozenJobErrorHandler"
    assert failure.correction.parameter_updates == {"incar": {"ALGO": "Normal"}}
