"""The test-cluster script hpc/testcluster/sge.sh (Son of Grid Engine).

The syntax check runs everywhere. The others need the running cluster (they fail,
never skip, when it is down): status reports it up, start is idempotent and keeps the
daemons it recorded.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from .sge_helpers import SGE_SCRIPT, require_sge_cluster


def run_script(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SGE_SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def recorded_pids() -> dict[str, str]:
    state = Path(os.environ.get("MATDX_SGECLUSTER_STATE", "/run/matdx-sgecluster"))
    return {name: (state / f"{name}.pid").read_text().strip()
            for name in ("sge_qmaster", "sge_execd") if (state / f"{name}.pid").exists()}


def test_script_syntax_and_usage():
    assert subprocess.run(["bash", "-n", str(SGE_SCRIPT)], check=False).returncode == 0
    bad = run_script("explode")
    assert bad.returncode != 0
    assert "unknown command 'explode'" in bad.stderr
    bad = run_script("start", "--slots", "many")
    assert bad.returncode != 0
    assert "--slots must be a positive integer, got 'many'" in bad.stderr
    bad = run_script("start", "--bogus")
    assert bad.returncode != 0
    assert "unknown option '--bogus'" in bad.stderr


@pytest.mark.sge
def test_status_and_idempotent_start():
    slots = require_sge_cluster()
    status = run_script("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "sge_qmaster: running" in status.stdout
    assert "sge_execd: running" in status.stdout
    assert f"settings: slots={slots}" in status.stdout
    before = recorded_pids()
    assert set(before) == {"sge_qmaster", "sge_execd"}
    again = run_script("start", "--slots", str(slots), "--no-install")
    assert again.returncode == 0, again.stderr
    assert f"already running with slots={slots}" in again.stderr
    assert recorded_pids() == before
    assert require_sge_cluster() == slots
