"""The test-cluster script hpc/testcluster/cluster.sh.

The syntax check runs everywhere. The others need the running cluster (they fail,
never skip, when it is down): start is idempotent, stop and start only touch
daemons the script recorded, and a restart with another CPU count takes effect.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from .slurm_helpers import CLUSTER_SCRIPT, require_cluster


def run_script(*args: str, state_dir: Path | None = None, timeout: float = 180):
    env = dict(os.environ)
    if state_dir is not None:
        env["MATDX_TESTCLUSTER_STATE"] = str(state_dir)
    return subprocess.run(["bash", str(CLUSTER_SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, check=False)


def recorded_pids() -> dict[str, str]:
    state = Path(os.environ.get("MATDX_TESTCLUSTER_STATE", "/run/matdx-testcluster"))
    return {name: (state / f"{name}.pid").read_text().strip()
            for name in ("munged", "slurmctld", "slurmd") if (state / f"{name}.pid").exists()}


def sinfo_cpus() -> int:
    out = subprocess.run(["sinfo", "--noheader", "--format=%c"], capture_output=True,
                         text=True, check=True, timeout=20).stdout
    return int(out.split()[0].rstrip("+"))


def test_script_syntax_and_usage():
    assert subprocess.run(["bash", "-n", str(CLUSTER_SCRIPT)], check=False).returncode == 0
    bad = run_script("explode")
    assert bad.returncode != 0
    assert "unknown command 'explode'" in bad.stderr
    bad = run_script("start", "--cpus", "many")
    assert bad.returncode != 0
    assert "--cpus must be a positive integer, got 'many'" in bad.stderr


@pytest.mark.slurm
def test_status_and_idempotent_start():
    require_cluster()
    status = run_script("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "slurmctld: running" in status.stdout
    before = recorded_pids()
    assert set(before) >= {"slurmctld", "slurmd"}
    again = run_script("start", "--cpus", str(sinfo_cpus()))
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stderr
    assert recorded_pids() == before


@pytest.mark.slurm
def test_stop_and_start_only_touch_daemons_the_script_recorded(tmp_path):
    require_cluster()
    before = recorded_pids()
    # A state directory without recorded pids: nothing of ours is running.
    stop = run_script("stop", state_dir=tmp_path)
    assert stop.returncode == 0, stop.stderr
    status = run_script("status", state_dir=tmp_path)
    assert status.returncode == 3
    assert "not started by this script" in status.stdout
    start = run_script("start", "--no-install", state_dir=tmp_path)
    assert start.returncode != 0
    assert "not started by this script is running" in start.stderr
    # the real daemons were never touched
    assert recorded_pids() == before
    require_cluster()


@pytest.mark.slurm
@pytest.mark.slow
def test_restart_with_another_cpu_count():
    original = require_cluster()
    other = 4 if original != 4 else 6
    try:
        changed = run_script("start", "--cpus", str(other))
        assert changed.returncode == 0, changed.stderr
        assert f"restarting with cpus={other}" in changed.stderr
        assert sinfo_cpus() == other
    finally:
        restored = run_script("start", "--cpus", str(original))
        assert restored.returncode == 0, restored.stderr
    assert sinfo_cpus() == original
    require_cluster()
