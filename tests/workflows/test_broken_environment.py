"""A broken batch environment is recognised, not retried (issue 12, item 8), on the real
Slurm test cluster.

The site profile's ``python`` is a real Python environment without mpi4py (every other
package of ours linked in), the most common failure of a new HPC user. ``matdx hpc check``'s
probe job reports the missing module; a campaign on that site submits two batch jobs, both
die before their farm starts, and every job is FAILED with one message naming the cause and
the fix, spending no retry.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from matdx.client import Client
from matdx.hpc.sites import SITES_DIR, check_site
from matdx.store.models import Batch, Job, JobState
from matdx.workflows import Flow
from matdx.workflows.executors.spec import validate_executor
from matdx.workflows.submit import CampaignGraph
from tests.hpc.slurm_helpers import python_without, require_cluster
from tests.workflows import jobs

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SITE = "nompi-slurm-testcluster"


@pytest.fixture
def broken_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The test cluster's profile, with a Python lacking mpi4py on the compute node."""
    require_cluster(min_cpus=8)
    python = python_without("mpi4py", tmp_path / "venv-without-mpi4py")
    profile = yaml.safe_load((SITES_DIR / "local-slurm-testcluster.yaml").read_text())
    profile.update(name=SITE, python=str(python), programs=["lmp"],
                   scratch=str(tmp_path / "scratch"))
    (tmp_path / "scratch").mkdir()
    sites = tmp_path / "sites"
    sites.mkdir()
    (sites / f"{SITE}.yaml").write_text(yaml.safe_dump(profile))
    monkeypatch.setenv("MATDX_SITES_PATH", str(sites))
    return SITE


def test_hpc_check_reports_the_missing_module_from_a_real_batch_job(broken_site):
    report = check_site(broken_site, probe=True, probe_timeout_s=120)
    found = {c.name: c for c in report.checks}
    assert not report.ok
    assert found["batch job: mpi4py"].status == "fail"
    assert "No module named 'mpi4py'" in found["batch job: mpi4py"].detail
    assert found["batch job: matdx"].status == "pass"
    assert found["batch job: mpi-launcher"].status == "pass"
    assert found["batch job: program:lmp"].status == "pass"


def test_two_identical_startup_failures_stop_the_campaign_without_spending_retries(
    broken_site, tmp_path, monkeypatch
):
    home = tmp_path / "home"
    monkeypatch.setenv("MATDX_HOME", str(home))
    monkeypatch.delenv("MATDX_STORE", raising=False)
    client = Client(home)
    executor = validate_executor(
        {"type": "slurm", "site": broken_site, "resources": {"walltime": "00:05:00"},
         "max_tasks_per_batch": 3}
    ).model_dump(mode="json")
    flows = [("sleep", Flow([jobs.sleep(1, i)])) for i in range(6)]
    campaign = client.submit(CampaignGraph("broken-env", flows, executor, {}))
    try:
        halted = []
        deadline = time.monotonic() + 240
        while not client.status(campaign)[0].done:
            report = client.tick(wait_s=30)
            halted += list(report.harvest.halted.values())
            assert time.monotonic() < deadline, client.status(campaign)
            time.sleep(2)
        with client.store.transaction() as session:
            batches = session.scalars(select(Batch)).all()
            rows = session.execute(select(Job.state, Job.failures, Job.reason)).all()
    finally:
        with client.store.transaction() as session:
            ids = [i for i in session.scalars(select(Batch.scheduler_id)) if i]
        subprocess.run(["scancel", *ids], check=False, capture_output=True)
        client.store.dispose()
    assert len(batches) == 2  # no third batch job was submitted
    assert all(b.info.get("startup_failure") == "ModuleNotFoundError: No module named 'mpi4py'"
               for b in batches)
    assert len(halted) == 1
    assert "No module named 'mpi4py'" in halted[0]
    assert f"matdx hpc check {broken_site}" in halted[0]
    assert {state for state, _, _ in rows} == {JobState.FAILED}
    assert {failures for _, failures, _ in rows} == {0}  # no retry spent
    assert {reason for _, _, reason in rows} == {halted[0]}
