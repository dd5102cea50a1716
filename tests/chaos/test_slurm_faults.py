"""Slurm faults on the real test cluster, during one campaign.

- ``sbatch`` failing: a PATH shim (wrapping the real command) refuses the first two
  submissions with Slurm's own socket-timeout message;
- ``squeue`` printing garbage once, then hanging past the site's command timeout once;
- the Slurm controller restarted while the campaign's batch jobs run
  (``cluster.sh restart-controller``: slurmctld saves and recovers its jobs);
- the node set DOWN while it runs a batch job, and resumed.

Each fault's evidence is measured where it happens: the shim's call counter and what it
printed, the controller's new pid, the node state Slurm reported and the batch job's end. The
campaign must then complete with one record per job, no batch left open.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select

from matdx.client import Client
from matdx.hpc.sites import SITES_DIR
from matdx.store.models import Batch, Job, JobState, Record
from matdx.workflows import Flow
from matdx.workflows.executors.spec import validate_executor
from matdx.workflows.submit import CampaignGraph
from tests.hpc.slurm_helpers import CLUSTER_SCRIPT, require_cluster
from tests.workflows import jobs

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SITE = "chaos-slurm-testcluster"
NODE = os.uname().nodename.split(".")[0]
REAL_SQUEUE = shutil.which("squeue") or "squeue"  # the test's own looks bypass the shim

SHIM = """#!/bin/bash
# chaos shim of {name}: misbehaves on the calls listed in {state}/{name}.faults
calls={state}/{name}.calls
n=$(( $(cat "$calls" 2>/dev/null || echo 0) + 1 )); echo "$n" > "$calls"
fault=$(awk -v n="$n" '$1 == n {{print $2}}' {state}/{name}.faults)
case "$fault" in
  fail) echo "sbatch: error: Batch job submission failed: Socket timed out on send/recv \
operation" >&2
        echo "$n fail" >> {state}/{name}.fired; exit 1 ;;
  garbage) printf '\\x01\\x02 ### not squeue output ### %s\\n' "$RANDOM"
        echo "$n garbage" >> {state}/{name}.fired; exit 0 ;;
  hang) echo "$n hang" >> {state}/{name}.fired; sleep 20; exit 0 ;;
esac
exec {real} "$@"
"""


def install_shims(directory: Path, faults: dict[str, dict[int, str]]) -> Path:
    directory.mkdir()
    for name, plan in faults.items():
        (directory / f"{name}.faults").write_text(
            "".join(f"{call} {what}\n" for call, what in plan.items()))
        real = subprocess.run(["which", name], capture_output=True, text=True).stdout.strip()
        shim = directory / name
        shim.write_text(SHIM.format(name=name, state=directory, real=real))
        shim.chmod(0o755)
    return directory


def fired(directory: Path, name: str) -> list[str]:
    path = directory / f"{name}.fired"
    return path.read_text().split("\n")[:-1] if path.exists() else []


def node_state() -> str:
    return subprocess.run(["sinfo", "-h", "-n", NODE, "-o", "%T"], capture_output=True,
                          text=True).stdout.strip()


def wait_for_node(timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not node_state().startswith(("idle", "mixed", "allocated", "completing")):
        assert time.monotonic() < deadline, f"node {NODE} is {node_state()!r}"
        time.sleep(0.5)


def running_jobs() -> list[str]:
    out = subprocess.run([REAL_SQUEUE, "-h", "-t", "RUNNING", "-o", "%i %j"], capture_output=True,
                         text=True).stdout
    return [line.split()[0] for line in out.splitlines() if " matdx-" in line]


def wait_running(timeout: float) -> list[str]:
    """The campaign's batch jobs running now, waiting up to ``timeout`` s for one."""
    deadline = time.monotonic() + timeout
    while not (running := running_jobs()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return running


def controller_pid() -> str:
    return subprocess.run(["pgrep", "-x", "slurmctld"], capture_output=True,
                          text=True).stdout.split()[0]


@pytest.fixture
def chaos_site(tmp_path, monkeypatch) -> str:
    require_cluster(min_cpus=8)
    profile = yaml.safe_load((SITES_DIR / "local-slurm-testcluster.yaml").read_text())
    profile.update(name=SITE, command_timeout=5, min_poll_interval=1)
    sites = tmp_path / "sites"
    sites.mkdir()
    (sites / f"{SITE}.yaml").write_text(yaml.safe_dump(profile))
    monkeypatch.setenv("MATDX_SITES_PATH", str(sites))
    yield SITE
    if "down" in node_state() or "drain" in node_state():
        subprocess.run(["scontrol", "update", f"NodeName={NODE}", "State=RESUME"], check=False)


def test_sbatch_squeue_controller_and_node_faults_during_one_campaign(
    chaos_site, tmp_path, monkeypatch, ledger
):
    shims = install_shims(tmp_path / "shims", {
        "sbatch": {1: "fail", 2: "fail"},
        "squeue": {2: "garbage", 3: "hang"},
    })
    monkeypatch.setenv("PATH", f"{shims}{os.pathsep}{os.environ['PATH']}")
    home = tmp_path / "home"
    monkeypatch.setenv("MATDX_HOME", str(home))
    monkeypatch.delenv("MATDX_STORE", raising=False)
    client = Client(home)
    executor = validate_executor(
        {"type": "slurm", "site": chaos_site, "resources": {"walltime": "00:10:00"},
         "max_tasks_per_batch": 2}
    ).model_dump(mode="json")
    flows = [("sleep", Flow([jobs.sleep(20, i)])) for i in range(6)]
    campaign = client.submit(CampaignGraph("slurm-chaos", flows, executor, {}))
    evidence: dict[str, str | None] = {"slurmctld restarted mid-campaign": None,
                                       "node set DOWN while it runs a job": None}
    node_down = None
    try:
        deadline = time.monotonic() + 420
        while not client.status(campaign)[0].done:
            assert time.monotonic() < deadline, client.status(campaign)
            client.tick(wait_s=30)
            running = wait_running(10.0)
            if running and evidence["slurmctld restarted mid-campaign"] is None:
                before = controller_pid()
                restart = subprocess.run(["bash", str(CLUSTER_SCRIPT), "restart-controller"],
                                         capture_output=True, text=True, timeout=120)
                after = controller_pid()
                if restart.returncode == 0 and after != before:
                    evidence["slurmctld restarted mid-campaign"] = (
                        f"slurmctld: pid {before} -> {after} while job(s) {running} ran")
            elif running and node_down is None:
                subprocess.run(["scontrol", "update", f"NodeName={NODE}", "State=DOWN",
                                "Reason=matdx-chaos"], check=True)
                node_down = (node_state(), running)
                # (ReturnToService=2 may bring it back before this: then RESUME is refused)
                subprocess.run(["scontrol", "update", f"NodeName={NODE}", "State=RESUME"],
                               check=False, capture_output=True)
                wait_for_node()
            time.sleep(1)
        with client.store.transaction() as session:
            states = dict(session.execute(
                select(Job.state, func.count()).group_by(Job.state)).all())
            records = dict(session.execute(
                select(Record.job_id, func.count()).group_by(Record.job_id)).all())
            open_batches = session.scalar(select(func.count()).where(Batch.state != "ENDED"))
            failures = set(session.scalars(select(Job.failures)))
            node_failures = session.scalars(
                select(Batch.scheduler_id).where(Batch.reason.contains("NODE_FAIL"))).all()
    finally:
        with client.store.transaction() as session:
            ids = [i for i in session.scalars(select(Batch.scheduler_id)) if i]
        subprocess.run(["scancel", *ids], check=False, capture_output=True)
        client.store.dispose()
    if node_down is not None and node_failures:
        evidence["node set DOWN while it runs a job"] = (
            f"node: {NODE} {node_down[0]} while job(s) {node_down[1]} ran; "
            f"batch job(s) {node_failures} ended NODE_FAIL")
    survived = (states == {JobState.COMPLETED: 6} and set(records.values()) == {1}
                and len(records) == 6 and open_batches == 0 and failures == {0})
    lost = 6 - states.get(JobState.COMPLETED, 0)
    duplicated = sum(n - 1 for n in records.values())
    stuck = open_batches + sum(n for s, n in states.items() if s != JobState.COMPLETED)
    sbatch, squeue = fired(shims, "sbatch"), fired(shims, "squeue")
    faults = {
        "sbatch failing": sbatch and f"sbatch: refused calls {sbatch}",
        "squeue printing garbage": [f for f in squeue if "garbage" in f]
        and f"squeue: {[f for f in squeue if 'garbage' in f]}",
        "squeue timing out": [f for f in squeue if "hang" in f]
        and f"squeue: {[f for f in squeue if 'hang' in f]} past the 5 s timeout",
        **evidence,
    }
    for fault, proof in faults.items():
        ledger.trial(f"Slurm: {fault}", evidence=proof or None, survived=survived,
                     lost=lost, duplicated=duplicated, stuck=stuck)
    assert survived, (states, records, open_batches, failures)
    assert all(faults.values()), faults  # every fault really fired
