"""Profile argv, environment, and the process runner with its execution record."""

from __future__ import annotations

import sys
import time

import pytest

from matdx.codes.errors import InputError, ProgramNotFound
from matdx.codes.execution import MPIRUN, Profile, execute, read_execution


def test_serial_command_is_the_binary():
    assert Profile(("pw.x", "-nk", "2")).command() == ["pw.x", "-nk", "2"]


def test_mpi_command_substitutes_ranks_and_threads():
    profile = Profile("cp2k", mpi=("srun", "--ntasks={ranks}", "--cpus-per-task={threads}"))
    assert profile.command(ranks=4, threads=2) == [
        "srun", "--ntasks=4", "--cpus-per-task=2", "cp2k"
    ]
    assert Profile("lmp", mpi=MPIRUN).command(ranks=2) == ["mpirun", "-np", "2", "lmp"]


@pytest.mark.parametrize(("ranks", "threads"), [(0, 1), (1, 0), (1.5, 1)])
def test_bad_ranks_or_threads_are_input_errors(ranks, threads):
    with pytest.raises(InputError):
        Profile("pw.x", mpi=MPIRUN).command(ranks, threads)


def test_ranks_without_launcher_is_an_input_error():
    with pytest.raises(InputError, match="MPI launcher"):
        Profile("pw.x").command(ranks=2)


def test_missing_binary_names_the_package():
    profile = Profile("no-such-program-xyz", install_hint="apt-get install xyz")
    with pytest.raises(ProgramNotFound, match="apt-get install xyz"):
        profile.check()


def test_environment_sets_threads_and_profile_variables():
    profile = Profile("x", environment={"FOO": "1", "OMP_NUM_THREADS": "8"})
    env = profile.env(threads=3, base={"PATH": "/bin", "FOO": "0"})
    assert env["FOO"] == "1" and env["PATH"] == "/bin"
    assert env["OMP_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == "3"


def test_profile_is_frozen_and_hashable():
    profile = Profile(["pw.x"], environment={"B": "2", "A": "1"})
    assert profile.environment == (("A", "1"), ("B", "2"))
    assert hash(profile) == hash(Profile("pw.x", environment={"A": "1", "B": "2"}))
    with pytest.raises(AttributeError):
        profile.binary = ("lmp",)  # type: ignore[misc]


def test_execute_writes_outputs_and_record_without_a_shell(tmp_path):
    code = "import sys; print('out $HOME;|'); print('err', file=sys.stderr); sys.exit(3)"
    record = execute(
        [sys.executable, "-c", code], tmp_path, env={}, stdout="o.txt", stderr="e.txt",
        ranks=2, threads=1,
    )
    assert (tmp_path / "o.txt").read_text() == "out $HOME;|\n"  # not expanded by a shell
    assert (tmp_path / "e.txt").read_text() == "err\n"
    assert record.returncode == 3 and not record.timed_out and record.signal is None
    saved = read_execution(tmp_path)
    assert saved is not None and saved.complete and saved.returncode == 3 and saved.ranks == 2


def test_timeout_kills_the_whole_process_group(tmp_path):
    """A launcher's children (like MPI ranks) die with it."""
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "open('child.pid', 'w').write(str(child.pid))\n"
        "time.sleep(60)\n"
    )
    start = time.monotonic()
    record = execute(
        [sys.executable, "-c", script], tmp_path, env={}, stdout="o", stderr="e",
        timeout_s=1.0, grace_s=1.0,
    )
    assert time.monotonic() - start < 15
    assert record.timed_out and record.returncode is not None and record.returncode < 0
    child = int((tmp_path / "child.pid").read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{child}/stat") as handle:
                state = handle.read().split()[2]
        except FileNotFoundError:
            break
        if state == "Z":
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"child {child} survived the timeout")


def test_signal_of_a_killed_program_is_recorded(tmp_path):
    code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    record = execute([sys.executable, "-c", code], tmp_path, env={}, stdout="o", stderr="e")
    assert record.signal == "SIGKILL" and record.returncode == -9


def test_read_execution_of_a_directory_without_record(tmp_path):
    assert read_execution(tmp_path) is None


def test_missing_programs_fail_instead_of_skipping(monkeypatch):
    """CI always runs the ``programs`` tests: a missing program is a failure with the fix."""
    from tests.codes import helpers

    monkeypatch.setattr(helpers.shutil, "which", lambda name: None)
    with pytest.raises(pytest.fail.Exception, match="apt-get install quantum-espresso"):
        helpers.require("pw.x")
