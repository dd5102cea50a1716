"""_call: the one function that runs scheduler commands."""

from __future__ import annotations

import logging
import sys

import pytest

from matdx.hpc.errors import CommandFailedError, CommandNotFoundError, CommandTimeoutError
from matdx.hpc.scheduler import _call


def test_success_returns_output():
    code = "import sys; print('out'); print('err', file=sys.stderr)"
    result = _call([sys.executable, "-c", code])
    assert result.returncode == 0
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"
    assert result.argv[0] == sys.executable


def test_failure_raises_with_exit_code_stdout_and_stderr():
    code = "import sys; print('partial'); print('boom', file=sys.stderr); sys.exit(7)"
    with pytest.raises(CommandFailedError) as info:
        _call([sys.executable, "-c", code])
    err = info.value
    assert err.returncode == 7
    assert err.stdout == "partial\n"
    assert err.stderr == "boom\n"
    assert "exit code 7" in str(err)
    assert "boom" in str(err)


def test_failure_without_check_returns_result():
    result = _call([sys.executable, "-c", "import sys; sys.exit(3)"], check=False)
    assert result.returncode == 3


def test_missing_program():
    with pytest.raises(CommandNotFoundError, match="not found on PATH"):
        _call(["matdx-no-such-program-xyz", "--help"])


def test_timeout():
    with pytest.raises(CommandTimeoutError, match=r"timed out after 0\.5 s") as info:
        _call([sys.executable, "-c", "import time; time.sleep(10)"], timeout=0.5)
    assert info.value.argv[0] == sys.executable


def test_stdin_and_cwd(tmp_path):
    result = _call(
        [sys.executable, "-c", "import os, sys; print(os.getcwd()); print(sys.stdin.read())"],
        input="from stdin", cwd=tmp_path,
    )
    assert result.stdout.splitlines() == [str(tmp_path), "from stdin"]


def test_no_shell_metacharacters_are_interpreted(tmp_path):
    canary = tmp_path / "canary"
    payload = f"; touch {canary} && $(touch {canary}) `touch {canary}` | touch {canary}"
    result = _call(["echo", payload], cwd=tmp_path)
    assert result.stdout == payload + "\n"
    assert not canary.exists()


def test_rejects_nul_and_empty():
    with pytest.raises(ValueError, match="NUL"):
        _call(["echo", "a\x00b"])
    with pytest.raises(ValueError, match="empty"):
        _call([])


def test_logs_the_command(caplog):
    with caplog.at_level(logging.INFO, logger="matdx.hpc"):
        _call(["echo", "hello world"])
    assert "$ echo 'hello world'" in caplog.text
