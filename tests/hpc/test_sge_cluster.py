"""Real batch jobs on the single-node Grid Engine test cluster (Son of Grid Engine 8.1.9).

The cluster must be running (``bash hpc/testcluster/sge.sh start --slots 8``); if it is
not, every test here fails with that instruction: CI always runs them, and a skipped
integration test counts as a failure.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from matdx.hpc.errors import CommandFailedError
from matdx.hpc.sites import SiteProfile, check_site, load_site
from matdx.hpc.status import BatchState, JobStatus

from .sge_helpers import require_sge_cluster
from .slurm_helpers import RecordingRunner, wait_until_final, wait_until_running

pytestmark = pytest.mark.sge

B = BatchState
SITE = "local-sge-testcluster"


def wait_until_gone(sge, job_id: str, timeout: float = 60) -> JobStatus:
    """Poll until ``job_id`` has left ``qstat`` (its status then comes from ``qacct``)."""
    deadline = time.monotonic() + timeout
    while True:
        status = sge.poll([job_id])[job_id]
        if not status.native_state or status.native_state.startswith("failed="):
            return status
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} still in qstat after {timeout} s: {status}")
        time.sleep(1)


@pytest.fixture(scope="module")
def site() -> SiteProfile:
    require_sge_cluster(min_slots=8)
    return load_site(SITE)


@pytest.fixture
def runner() -> RecordingRunner:
    return RecordingRunner()


def test_check_site_against_the_running_cluster(site):
    report = check_site(SITE)
    assert report.ok, report.format()
    checks = {c.name: c for c in report.checks}
    assert checks["commands"].status == "pass"
    assert checks["partition all.q"].status == "pass"
    assert "8 CPUs/node" in checks["partition all.q"].detail
    assert "1 nodes" in checks["partition all.q"].detail


def test_jobs_complete_and_fail_with_exit_code_3(site, runner, tmp_path):
    sge = site.scheduler_adapter(runner=runner)
    canary = tmp_path / "canary"
    # shell syntax stays data; a line break would be refused (matdx.safety.text)
    payload = f"$(touch {canary}); `touch {canary}` && touch {canary} \t'\""
    ok = site.resources(
        job_name="matdx-ok", walltime="5min", working_directory=tmp_path,
        output=tmp_path / "ok.out", environment={"MATDX_PAYLOAD": payload},
        pre_commands=[["sh", "-c", 'echo pre; printf "%s" "$MATDX_PAYLOAD" > payload.txt']],
        post_commands=[["echo", "post"]],
    )
    ok_script = sge.write_script(ok, [["echo", "main", payload], ["sh", "-c", "echo err >&2"]],
                                 tmp_path / "ok.sh")
    fail = site.resources(job_name="matdx-fail", walltime="5min", working_directory=tmp_path,
                          output=tmp_path / "fail.out")
    fail_script = sge.write_script(fail, [["sh", "-c", "exit 3"], ["echo", "not reached"]],
                                   tmp_path / "fail.sh")
    ok_id = sge.submit(ok_script)
    fail_id = sge.submit(fail_script)
    assert runner.argvs == [["qsub", "-terse", str(ok_script)],
                            ["qsub", "-terse", str(fail_script)]]

    runner.argvs.clear()
    statuses = wait_until_final(sge, [ok_id, fail_id], timeout=120,
                                interval=site.min_poll_interval)
    # every poll is one qstat for all jobs, plus one qacct per job that has left qstat
    assert runner.argvs[0] == ["qstat", "-xml"]
    assert all(argv in (["qstat", "-xml"], ["qacct", "-j", ok_id], ["qacct", "-j", fail_id])
               for argv in runner.argvs)

    assert (statuses[ok_id].state, statuses[ok_id].exit_code) == (B.COMPLETED, 0)
    assert (statuses[fail_id].state, statuses[fail_id].exit_code) == (B.FAILED, 3)
    assert statuses[fail_id].native_state == "failed=0 exit_status=3"

    out = (tmp_path / "ok.out").read_text().splitlines()
    assert out[0] == "pre"
    assert out[1] == f"main {payload}".splitlines()[0]
    assert "err" in out  # stderr joins the output file, as with Slurm
    assert out[-1] == "post"
    assert (tmp_path / "payload.txt").read_text() == payload
    assert not canary.exists()
    assert "not reached" not in (tmp_path / "fail.out").read_text()


def test_multi_slot_jobs_get_the_smp_environment_and_pack_the_queue(site, tmp_path):
    sge = site.scheduler_adapter()
    ids = []
    for i, slots in enumerate((4, 2, 2)):
        res = site.resources(job_name=f"matdx-pack{i}", walltime="5min", ranks_per_node=slots,
                             working_directory=tmp_path, output=tmp_path / f"pack{i}.out")
        script = sge.write_script(
            res, [["sh", "-c", 'echo "NSLOTS=$NSLOTS PE=$PE"; cat "$PE_HOSTFILE"; sleep 8']],
            tmp_path / f"pack{i}.sh")
        assert f"#$ -pe smp {slots}" in script.read_text().splitlines()
        ids.append(sge.submit(script))
    # 4 + 2 + 2 slots fill the 8-slot queue: all three run at the same time
    deadline = time.monotonic() + 60
    while True:
        statuses = sge.poll(ids)
        if all(s.state is B.RUNNING for s in statuses.values()):
            break
        assert time.monotonic() < deadline, statuses
        time.sleep(1)
    statuses = wait_until_final(sge, ids, timeout=120)
    assert all(s.state is B.COMPLETED for s in statuses.values()), statuses
    for i, slots in enumerate((4, 2, 2)):
        lines = (tmp_path / f"pack{i}.out").read_text().splitlines()
        assert lines[0] == f"NSLOTS={slots} PE=smp"
        assert lines[1].split()[1] == str(slots)  # $PE_HOSTFILE: host, slots, queue, ...
    accounting = subprocess.run(["qacct", "-j", ids[0]], capture_output=True, text=True,
                                check=True).stdout
    assert "granted_pe   smp" in accounting


def test_qdel_of_a_running_job_is_cancelled(site, runner, tmp_path):
    sge = site.scheduler_adapter(runner=runner)
    res = site.resources(job_name="matdx-sleep", walltime="10min", working_directory=tmp_path,
                         output=tmp_path / "sleep.out")
    job_id = sge.submit(sge.write_script(res, [["sleep", "300"]], tmp_path / "sleep.sh"))
    wait_until_running(sge, job_id, timeout=60)
    sge.cancel([job_id])
    assert runner.argvs[-1] == ["qdel", job_id]
    being_deleted = sge.poll([job_id])[job_id]
    if being_deleted.native_state:  # still listed by qstat as dr: already final
        assert (being_deleted.state, being_deleted.native_state) == (B.CANCELLED, "dr")
    status = wait_until_gone(sge, job_id)
    assert status.state is B.CANCELLED
    assert status.signal == 9
    assert status.native_state == "failed=100 exit_status=137"
    sge.cancel([job_id])  # cancelling a finished job is harmless


def test_qdel_of_a_pending_job_leaves_no_accounting_record(site, tmp_path):
    sge = site.scheduler_adapter()
    res = site.resources(job_name="matdx-early", walltime="5min", working_directory=tmp_path,
                         output=tmp_path / "early.out")
    script = sge.write_script(res, [["sleep", "60"]], tmp_path / "early.sh")
    job_id = subprocess.run(["qsub", "-terse", "-h", str(script)], capture_output=True,
                            text=True, check=True).stdout.strip()
    assert sge.poll([job_id])[job_id].reason == "held"
    sge.cancel([job_id])
    status = wait_until_gone(sge, job_id)
    assert status.state is B.UNKNOWN  # Grid Engine keeps nothing of a job that never ran
    assert "no accounting record" in status.reason


@pytest.mark.slow
def test_job_over_h_rt_ends_timeout(site, tmp_path):
    sge = site.scheduler_adapter()
    res = site.resources(job_name="matdx-timeout", walltime=10, working_directory=tmp_path,
                         output=tmp_path / "timeout.out")
    script = sge.write_script(res, [["sleep", "600"]], tmp_path / "timeout.sh")
    assert "#$ -l h_rt=00:00:10" in script.read_text().splitlines()
    job_id = sge.submit(script)
    status = wait_until_final(sge, [job_id], timeout=120)[job_id]
    assert status.state is B.TIMEOUT
    assert "h_rt" in status.reason  # "exceeded h_rt=10" (or qacct's failed-37 text)
    assert status.signal == 9


def test_mpi_launcher_from_site_profile_runs_ranks_in_the_granted_slots(site, tmp_path):
    sge = site.scheduler_adapter()
    res = site.resources(job_name="matdx-mpi", walltime="5min", ranks_per_node=2,
                         working_directory=tmp_path, output=tmp_path / "mpi.out")
    command = [*site.mpi.argv(res.total_ranks), "sh", "-c", 'echo "rank $OMPI_COMM_WORLD_RANK"']
    job_id = sge.submit(sge.write_script(res, [command], tmp_path / "mpi.sh"))
    status = wait_until_final(sge, [job_id], timeout=120)[job_id]
    output = (tmp_path / "mpi.out").read_text()
    assert status.state is B.COMPLETED, output
    assert sorted(ln for ln in output.splitlines() if ln.startswith("rank")) == \
        ["rank 0", "rank 1"]


def test_find_by_name_sees_pending_and_running_jobs(site, tmp_path):
    sge = site.scheduler_adapter()
    res = site.resources(job_name="matdx-findme", walltime="5min", working_directory=tmp_path,
                         output=tmp_path / "find.out")
    job_id = sge.submit(sge.write_script(res, [["sleep", "30"]], tmp_path / "find.sh"))
    try:
        assert sge.find_by_name("matdx-findme") == [job_id]
        assert sge.find_by_name("matdx-nobody") == []
    finally:
        sge.cancel([job_id])


def test_unknown_job_is_unknown_after_qstat_and_qacct(site, runner):
    sge = site.scheduler_adapter(runner=runner)
    status = sge.poll(["999999"])["999999"]
    assert status.state is B.UNKNOWN
    assert runner.argvs == [["qstat", "-xml"], ["qacct", "-j", "999999"]]


def test_submit_to_missing_queue_raises_with_the_qsub_message(site, tmp_path):
    sge = site.scheduler_adapter()
    res = site.resources(walltime=60).replace(partition="nope.q")
    script = sge.write_script(res, [["true"]], tmp_path / "bad.sh")
    with pytest.raises(CommandFailedError) as info:
        sge.submit(script)
    assert info.value.returncode != 0
    assert "nope.q" in info.value.stderr
    assert info.value.argv == ["qsub", "-terse", str(script)]
