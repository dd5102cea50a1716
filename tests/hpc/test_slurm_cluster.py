"""Real batch jobs on the single-node Slurm test cluster.

The cluster must be running (``bash hpc/testcluster/cluster.sh start --cpus 8``);
if it is not, every test here fails with that instruction: CI always runs them,
and a skipped integration test counts as a failure.
"""

from __future__ import annotations

import pytest

from matdx.hpc.errors import CommandFailedError
from matdx.hpc.sites import SiteProfile, check_site, load_site
from matdx.hpc.status import BatchState

from .slurm_helpers import RecordingRunner, require_cluster, wait_until_final, wait_until_running

pytestmark = pytest.mark.slurm

B = BatchState


@pytest.fixture(scope="module")
def site() -> SiteProfile:
    require_cluster(min_cpus=8)
    return load_site("local-slurm-testcluster")


@pytest.fixture
def runner() -> RecordingRunner:
    return RecordingRunner()


def test_check_site_against_the_running_cluster(site):
    report = check_site("local-slurm-testcluster", probe=True, probe_timeout_s=120)
    assert report.ok, report.format()
    statuses = {c.name: c.status for c in report.checks}
    assert statuses["commands"] == "pass"
    assert statuses["partition debug"] == "pass"
    # the probe job started matdx and mpi4py in the site's real batch environment
    for name in ("python", "matdx", "mpi4py", "mpi-launcher"):
        assert statuses[f"batch job: {name}"] == "pass"


def test_jobs_complete_and_fail_with_exit_code_3_polled_in_one_call(site, runner, tmp_path):
    slurm = site.scheduler_adapter(runner=runner)
    canary = tmp_path / "canary"
    # shell syntax stays data; a line break would be refused (matdx.safety.text)
    payload = f"$(touch {canary}); `touch {canary}` && touch {canary} \t'\""
    ok = site.resources(
        job_name="matdx-ok", walltime="5min", working_directory=tmp_path,
        output=tmp_path / "ok-%j.out", environment={"MATDX_PAYLOAD": payload},
        pre_commands=[["sh", "-c", 'echo pre; printf "%s" "$MATDX_PAYLOAD" > payload.txt']],
        post_commands=[["echo", "post"]],
    )
    ok_script = slurm.write_script(ok, [["echo", "main", payload], ["hostname"]],
                                   tmp_path / "ok.sh")
    fail = site.resources(job_name="matdx-fail", walltime="5min", working_directory=tmp_path,
                          output=tmp_path / "fail-%j.out")
    fail_script = slurm.write_script(fail, [["sh", "-c", "exit 3"], ["echo", "not reached"]],
                                     tmp_path / "fail.sh")

    ok_id = slurm.submit(ok_script)
    fail_id = slurm.submit(fail_script)
    assert runner.argvs == [["sbatch", "--parsable", str(ok_script)],
                            ["sbatch", "--parsable", str(fail_script)]]

    runner.argvs.clear()
    statuses = wait_until_final(slurm, [ok_id, fail_id], timeout=120,
                                interval=site.min_poll_interval)
    # every poll was a single squeue call: both jobs are still known to slurmctld
    assert runner.argvs
    assert all(argv[0] == "squeue" for argv in runner.argvs)
    assert all(f"--jobs={ok_id},{fail_id}" in argv for argv in runner.argvs)

    assert statuses[ok_id].state is B.COMPLETED
    assert statuses[ok_id].exit_code == 0
    assert statuses[fail_id].state is B.FAILED
    assert statuses[fail_id].exit_code == 3
    assert statuses[fail_id].native_state == "FAILED"

    out = (tmp_path / f"ok-{ok_id}.out").read_text().splitlines()
    assert out[0] == "pre"
    assert out[1] == f"main {payload}".splitlines()[0]
    assert out[-1] == "post"
    assert (tmp_path / "payload.txt").read_text() == payload
    assert not canary.exists()
    assert "not reached" not in (tmp_path / f"fail-{fail_id}.out").read_text()


def test_cancel_running_job(site, runner, tmp_path):
    slurm = site.scheduler_adapter(runner=runner)
    res = site.resources(job_name="matdx-sleep", walltime="10min", working_directory=tmp_path,
                         output=tmp_path / "sleep.out")
    job_id = slurm.submit(slurm.write_script(res, [["sleep", "300"]], tmp_path / "sleep.sh"))
    wait_until_running(slurm, job_id, timeout=60)
    slurm.cancel([job_id])
    assert runner.argvs[-1] == ["scancel", job_id]
    status = wait_until_final(slurm, [job_id], timeout=60)[job_id]
    assert status.state is B.CANCELLED
    assert status.signal == 15
    slurm.cancel([job_id])  # cancelling a finished job is harmless


def test_cancel_right_after_submit(site, tmp_path):
    slurm = site.scheduler_adapter()
    res = site.resources(job_name="matdx-early", walltime="5min", working_directory=tmp_path,
                         output=tmp_path / "early.out")
    job_id = slurm.submit(slurm.write_script(res, [["sleep", "60"]], tmp_path / "early.sh"))
    slurm.cancel([job_id])
    status = wait_until_final(slurm, [job_id], timeout=60)[job_id]
    assert status.state is B.CANCELLED


@pytest.mark.slow
def test_job_over_walltime_ends_timeout(site, runner, tmp_path):
    slurm = site.scheduler_adapter(runner=runner)
    res = site.resources(job_name="matdx-timeout", walltime=60, working_directory=tmp_path,
                         output=tmp_path / "timeout-%j.out")
    script = slurm.write_script(res, [["sleep", "600"]], tmp_path / "timeout.sh")
    assert "#SBATCH --time=00:01:00" in script.read_text().splitlines()
    job_id = slurm.submit(script)
    status = wait_until_final(slurm, [job_id], timeout=240, interval=5)[job_id]
    assert status.state is B.TIMEOUT
    assert status.reason == "TimeLimit"
    assert "DUE TO TIME LIMIT" in (tmp_path / f"timeout-{job_id}.out").read_text()


def test_mpi_launcher_from_site_profile_runs_ranks(site, tmp_path):
    slurm = site.scheduler_adapter()
    res = site.resources(job_name="matdx-mpi", walltime="5min", ranks_per_node=2,
                         working_directory=tmp_path, output=tmp_path / "mpi.out")
    command = [*site.mpi.argv(res.total_ranks), "sh", "-c", 'echo "rank $OMPI_COMM_WORLD_RANK"']
    job_id = slurm.submit(slurm.write_script(res, [command], tmp_path / "mpi.sh"))
    status = wait_until_final(slurm, [job_id], timeout=120)[job_id]
    output = (tmp_path / "mpi.out").read_text()
    assert status.state is B.COMPLETED, output
    assert sorted(ln for ln in output.splitlines() if ln.startswith("rank")) == \
        ["rank 0", "rank 1"]


def test_unknown_job_is_unknown_after_squeue_and_scontrol(site, runner):
    slurm = site.scheduler_adapter(runner=runner)
    status = slurm.poll(["999999"])["999999"]
    assert status.state is B.UNKNOWN
    assert [argv[0] for argv in runner.argvs] == ["squeue", "scontrol"]


def test_submit_to_missing_partition_raises_with_slurm_message(site, tmp_path):
    slurm = site.scheduler_adapter()
    res = site.resources(walltime=60).replace(partition="nope")
    script = slurm.write_script(res, [["true"]], tmp_path / "bad.sh")
    with pytest.raises(CommandFailedError) as info:
        slurm.submit(script)
    assert info.value.returncode != 0
    assert "invalid partition" in info.value.stderr.lower()
    assert info.value.argv == ["sbatch", "--parsable", str(script)]


def test_list_partitions_reports_the_debug_partition(site):
    parts = {p.name: p for p in site.scheduler_adapter().list_partitions()}
    assert parts["debug"].cpus_per_node >= 8
    assert parts["debug"].max_walltime is None
