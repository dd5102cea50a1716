"""Slurm adapter, offline: script header, command lines, and parsing of output recorded
from the real Slurm 22.05 test cluster (tests/hpc/fixtures/slurm_*)."""

from __future__ import annotations

import pytest

from matdx.hpc.errors import CommandFailedError, PollError, SubmitError
from matdx.hpc.resources import Resources
from matdx.hpc.slurm import (
    SLURM_STATES,
    SlurmScheduler,
    format_slurm_time,
    map_slurm_state,
    parse_slurm_time,
)
from matdx.hpc.status import BatchState, JobStatus

from .conftest import Reply, fixture_text

B = BatchState
SQUEUE = ("squeue",)
SCONTROL = ("scontrol",)


def full_resources() -> Resources:
    return Resources(
        job_name="relax-si", nodes=2, ranks_per_node=16, threads_per_rank=2,
        walltime="1-02:03:04", memory="64G", partition="standard", account="e123",
        qos="high", gpus_per_node=4, exclusive=True, output="/scratch/r/%x-%j.out",
        error="/scratch/r/%x-%j.err", working_directory="/scratch/r",
    )


def test_header_lines():
    assert SlurmScheduler().header_lines(full_resources()) == [
        "#SBATCH --job-name=relax-si",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=16",
        "#SBATCH --cpus-per-task=2",
        "#SBATCH --time=1-02:03:04",
        "#SBATCH --no-requeue",
        "#SBATCH --mem=65536M",
        "#SBATCH --partition=standard",
        "#SBATCH --account=e123",
        "#SBATCH --qos=high",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --exclusive",
        "#SBATCH --output=/scratch/r/%x-%j.out",
        "#SBATCH --error=/scratch/r/%x-%j.err",
        "#SBATCH --chdir=/scratch/r",
    ]


def test_minimal_header():
    assert SlurmScheduler().header_lines(Resources(job_name="a", walltime=90)) == [
        "#SBATCH --job-name=a",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --cpus-per-task=1",
        "#SBATCH --time=00:01:30",
        "#SBATCH --no-requeue",
    ]


def test_time_formats():
    assert format_slurm_time(59) == "00:00:59"
    assert format_slurm_time(86400) == "1-00:00:00"
    assert [parse_slurm_time(t) for t in ("5", "5:30", "1:00:00", "2-0", "2-1:30", "UNLIMITED")] \
        == [300, 330, 3600, 172800, 178200, None]
    with pytest.raises(ValueError, match="not a Slurm time"):
        parse_slurm_time("soon")


def test_submit(fake_runner, tmp_path):
    fake_runner.replies[("sbatch",)] = Reply(stdout="4242\n")
    slurm = SlurmScheduler(runner=fake_runner, timeout=12)
    script = slurm.write_script(Resources(walltime=60), ["hostname"], tmp_path / "job.sh")
    assert slurm.submit(script) == "4242"
    call = fake_runner.calls[0]
    assert call["argv"] == ["sbatch", "--parsable", str(script)]
    assert call["cwd"] == tmp_path
    assert call["timeout"] == 12
    assert call["input"] is None


def test_submit_errors(fake_runner, tmp_path):
    slurm = SlurmScheduler(runner=fake_runner)
    with pytest.raises(FileNotFoundError):
        slurm.submit(tmp_path / "missing.sh")
    script = slurm.write_script(Resources(walltime=60), ["true"], tmp_path / "job.sh")
    fake_runner.replies[("sbatch",)] = Reply(
        stderr="sbatch: error: invalid partition specified: nope\n", returncode=1,
    )
    with pytest.raises(CommandFailedError, match="invalid partition") as info:
        slurm.submit(script)
    assert info.value.returncode == 1
    fake_runner.replies[("sbatch",)] = Reply(stdout="Submitted batch job\n")
    with pytest.raises(SubmitError, match="no job id"):
        slurm.submit(script)


@pytest.mark.parametrize(
    ("out", "job_id"), [("77\n", "77"), ("77;ci\n", "77"), ("  12345  ", "12345")],
)
def test_parse_job_id(out, job_id):
    assert SlurmScheduler().parse_job_id(out) == job_id


def test_squeue_argv():
    assert SlurmScheduler().squeue_argv(["7", "8"]) == [
        "squeue", "--noheader", "--states=all", "--jobs=7,8",
        "--Format=JobID:40|,State:24|,exit_code:12|,Reason:200|",
    ]


def test_parse_recorded_squeue_finished():
    found = SlurmScheduler().parse_squeue(fixture_text("slurm_squeue.txt"))
    assert found == {
        "7": JobStatus("7", B.TIMEOUT, None, 15, "TimeLimit", "TIMEOUT"),
        "8": JobStatus("8", B.CANCELLED, None, 15, "", "CANCELLED"),
        "9": JobStatus("9", B.CANCELLED, 0, None, "DependencyNeverSatisfied", "CANCELLED"),
        "10": JobStatus("10", B.COMPLETED, 0, None, "", "COMPLETED"),
        "11": JobStatus("11", B.FAILED, 3, None, "NonZeroExitCode", "FAILED"),
    }


def test_parse_recorded_squeue_active():
    found = SlurmScheduler().parse_squeue(fixture_text("slurm_squeue_active.txt"))
    assert found == {
        "12": JobStatus("12", B.RUNNING, None, None, "", "RUNNING"),
        "13": JobStatus("13", B.QUEUED, None, None, "Resources", "PENDING"),
        "14": JobStatus("14", B.QUEUED, None, None, "JobHeldUser", "PENDING"),
    }


def test_parse_squeue_garbage():
    with pytest.raises(PollError, match="cannot parse squeue line"):
        SlurmScheduler().parse_squeue("no separators here\n")


def test_parse_recorded_scontrol():
    slurm = SlurmScheduler()
    assert slurm.parse_scontrol(fixture_text("slurm_scontrol_timeout.txt"), "7") == JobStatus(
        "7", B.TIMEOUT, None, 15, "TimeLimit", "TIMEOUT"
    )
    assert slurm.parse_scontrol(fixture_text("slurm_scontrol_failed.txt"), "11") == JobStatus(
        "11", B.FAILED, 3, None, "NonZeroExitCode", "FAILED"
    )
    with pytest.raises(PollError, match="no JobState for job 12"):
        slurm.parse_scontrol(fixture_text("slurm_scontrol_failed.txt"), "12")


def test_poll_uses_one_squeue_and_scontrol_only_for_missing_ids(fake_runner):
    fake_runner.replies[SQUEUE] = Reply(stdout=fixture_text("slurm_squeue.txt"))
    fake_runner.replies[SCONTROL] = Reply(
        stderr="slurm_load_jobs error: Invalid job id specified\n", returncode=1,
    )
    ids = ["7", "8", "9", "10", "11", "424242", "7"]
    statuses = SlurmScheduler(runner=fake_runner).poll(ids)
    assert list(statuses) == ["7", "8", "9", "10", "11", "424242"]
    assert statuses["424242"].state is B.UNKNOWN
    assert "no longer knows" in statuses["424242"].reason
    assert statuses["11"].exit_code == 3
    assert fake_runner.argvs == [
        SlurmScheduler().squeue_argv(["7", "8", "9", "10", "11", "424242"]),
        ["scontrol", "--oneliner", "show", "job", "424242"],
    ]


def test_poll_when_squeue_knows_none_of_the_ids(fake_runner):
    fake_runner.replies[SQUEUE] = Reply(
        stderr="slurm_load_jobs error: Invalid job id specified\n", returncode=1,
    )
    fake_runner.replies[SCONTROL] = Reply(stdout=fixture_text("slurm_scontrol_timeout.txt"))
    statuses = SlurmScheduler(runner=fake_runner).poll(["7"])
    assert statuses["7"].state is B.TIMEOUT
    assert len(fake_runner.calls) == 2


def test_poll_raises_when_controller_unreachable(fake_runner):
    fake_runner.replies[SQUEUE] = Reply(
        stderr="slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n",
        returncode=1,
    )
    with pytest.raises(CommandFailedError, match="Unable to contact slurm controller") as info:
        SlurmScheduler(runner=fake_runner).poll(["1"])
    assert info.value.returncode == 1
    assert "connect failure" in info.value.stderr


def test_poll_raises_when_scontrol_fails_otherwise(fake_runner):
    fake_runner.replies[SQUEUE] = Reply(stdout="")
    fake_runner.replies[SCONTROL] = Reply(stderr="scontrol: error: Socket timed out\n",
                                          returncode=1)
    with pytest.raises(CommandFailedError, match="Socket timed out"):
        SlurmScheduler(runner=fake_runner).poll(["5"])


@pytest.mark.parametrize(("native", "expected"), sorted(SLURM_STATES.items()))
def test_every_slurm_state_maps(native, expected):
    status = map_slurm_state(native, "None", 2, None, "1")
    assert status.state is expected
    assert status.native_state == native
    assert status.exit_code == (None if expected.is_active else 2)


def test_state_mapping_details():
    assert map_slurm_state("CANCELLED by 1000").state is B.CANCELLED
    assert map_slurm_state("PREEMPTED").reason == "preempted"
    assert map_slurm_state("OUT_OF_MEMORY", "OutOfMemory", 0, 9).state is B.OUT_OF_MEMORY
    assert map_slurm_state("NODE_FAIL").state is B.NODE_FAIL
    odd = map_slurm_state("WEIRD_NEW_STATE")
    assert odd.state is B.UNKNOWN
    assert "WEIRD_NEW_STATE" in odd.reason


def test_list_partitions(fake_runner):
    fake_runner.replies[("sinfo",)] = Reply(
        stdout=fixture_text("slurm_sinfo.txt")
        + "standard|128|257000|2-00:00:00|100\nstandard|64+|128000|2-00:00:00|20\n",
    )
    parts = {p.name: p for p in SlurmScheduler(runner=fake_runner).list_partitions()}
    assert parts["debug"].cpus_per_node == 8
    assert parts["debug"].max_walltime is None
    assert parts["debug"].nodes == 1
    assert (parts["standard"].cpus_per_node, parts["standard"].memory_per_node) == (128, 257000)
    assert parts["standard"].nodes == 120
    assert parts["standard"].max_walltime == 172800
    assert fake_runner.argvs == [["sinfo", "--noheader", "--format=%R|%c|%m|%l|%D"]]


def test_cancel(fake_runner):
    fake_runner.replies[("scancel",)] = Reply()
    SlurmScheduler(runner=fake_runner).cancel(["5", "6", "5"])
    assert fake_runner.argvs == [["scancel", "5", "6"]]


def test_cancel_ignores_jobs_already_gone_but_not_other_errors(fake_runner):
    slurm = SlurmScheduler(runner=fake_runner)
    fake_runner.replies[("scancel",)] = Reply(
        stderr="scancel: error: Kill job error on job id 5: Invalid job id specified\n",
        returncode=1,
    )
    slurm.cancel(["5"])
    fake_runner.replies[("scancel",)] = Reply(
        stderr="scancel: error: Kill job error on job id 5: Access/permission denied\n",
        returncode=1,
    )
    with pytest.raises(CommandFailedError, match="permission denied"):
        slurm.cancel(["5"])
