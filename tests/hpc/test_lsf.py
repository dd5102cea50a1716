"""IBM Spectrum LSF adapter, offline.

LSF cannot run on this machine: the adapter is tested against ``bjobs -o ... -json``
and ``bqueues`` output written by hand from the IBM Spectrum LSF 10.1 documentation
(``bjobs -json`` RECORDS with an ``ERROR`` key for unknown jobs; termination reason
keywords TERM_*). See tests/hpc/fixtures/README.md.
"""

from __future__ import annotations

import pytest

from matdx.hpc.errors import CommandFailedError, PollError, UnsupportedResourceError
from matdx.hpc.lsf import LSF_ACTIVE_STATES, LSF_TERM_REASONS, LSFScheduler, map_lsf_record
from matdx.hpc.resources import Resources
from matdx.hpc.status import BatchState

from .conftest import Reply, fixture_text

B = BatchState


def test_header():
    r = Resources(job_name="relax-si", nodes=2, ranks_per_node=16, threads_per_rank=2,
                  walltime="26:00:30", memory="64G", partition="normal", account="e123",
                  gpus_per_node=4, exclusive=True, output="/s/r/out.log", error="/s/r/err.log",
                  working_directory="/s/r")
    assert LSFScheduler().header_lines(r) == [
        "#BSUB -J relax-si",
        "#BSUB -n 64",
        "#BSUB -R span[ptile=32]",
        "#BSUB -W 26:01",
        "#BSUB -R rusage[mem=65536MB]",
        "#BSUB -M 65536MB",
        "#BSUB -q normal",
        "#BSUB -P e123",
        "#BSUB -gpu num=4",
        "#BSUB -x",
        "#BSUB -o /s/r/out.log",
        "#BSUB -e /s/r/err.log",
        "#BSUB -cwd /s/r",
    ]


def test_rejects_qos():
    with pytest.raises(UnsupportedResourceError, match="qos: LSF has no QOS"):
        LSFScheduler().header_lines(Resources(walltime=60, qos="high"))


def test_submit_feeds_script_on_stdin(fake_runner, tmp_path):
    fake_runner.replies[("bsub",)] = Reply(stdout="Job <3001> is submitted to queue <normal>.\n")
    lsf = LSFScheduler(runner=fake_runner)
    script = lsf.write_script(Resources(job_name="a", walltime=60), ["hostname"],
                              tmp_path / "job.sh")
    assert lsf.submit(script) == "3001"
    call = fake_runner.calls[0]
    assert call["argv"] == ["bsub"]
    assert call["input"] == script.read_text()
    assert call["input"].splitlines()[1] == "#BSUB -J a"
    assert call["cwd"] == tmp_path


def test_submit_without_job_id(fake_runner, tmp_path):
    fake_runner.replies[("bsub",)] = Reply(stdout="Request aborted by esub. Job not submitted.\n")
    lsf = LSFScheduler(runner=fake_runner)
    script = lsf.write_script(Resources(walltime=60), ["true"], tmp_path / "job.sh")
    with pytest.raises(Exception, match="no job id"):
        lsf.submit(script)


def test_parse_recorded_bjobs():
    found = LSFScheduler().parse_bjobs(fixture_text("lsf_bjobs.json"))
    summary = {k: (v.state, v.exit_code) for k, v in found.items()}
    assert summary == {
        "3001": (B.COMPLETED, 0),
        "3002": (B.FAILED, 3),
        "3003": (B.TIMEOUT, 140),
        "3004": (B.OUT_OF_MEMORY, 1),
        "3005": (B.CANCELLED, 130),
        "3006": (B.RUNNING, None),
        "3007": (B.QUEUED, None),
        "3008": (B.QUEUED, None),
        "3009": (B.NODE_FAIL, None),
        "3010": (B.CANCELLED, None),
        "3011": (B.UNKNOWN, None),
    }
    assert found["3007"].reason == "New job is waiting for scheduling;"
    assert found["3011"].reason == "Job <3011> is not found"
    assert found["3003"].native_state == "EXIT"


def test_poll_one_command(fake_runner):
    fake_runner.replies[("bjobs",)] = Reply(stdout=fixture_text("lsf_bjobs.json"), returncode=255)
    statuses = LSFScheduler(runner=fake_runner).poll(["3001", "3011", "3003"])
    assert fake_runner.argvs == [
        ["bjobs", "-a", "-json", "-o", "jobid stat exit_code exit_reason pend_reason",
         "3001", "3011", "3003"]
    ]
    assert [s.state for s in statuses.values()] == [B.COMPLETED, B.UNKNOWN, B.TIMEOUT]


def test_poll_failures(fake_runner):
    fake_runner.replies[("bjobs",)] = Reply(
        stderr="LSF is down. Please wait ...\n", returncode=255,
    )
    with pytest.raises(CommandFailedError, match="LSF is down"):
        LSFScheduler(runner=fake_runner).poll(["1"])
    with pytest.raises(PollError, match="RECORDS"):
        LSFScheduler().parse_bjobs('{"COMMAND":"bjobs"}')


@pytest.mark.parametrize(("keyword", "state"), sorted(LSF_TERM_REASONS.items()))
def test_term_keywords(keyword, state):
    record = {"JOBID": "1", "STAT": "EXIT", "EXIT_CODE": "9",
              "EXIT_REASON": f"{keyword}: whatever LSF says"}
    assert map_lsf_record(record).state is state


@pytest.mark.parametrize(("stat", "entry"), sorted(LSF_ACTIVE_STATES.items()))
def test_active_states(stat, entry):
    status = map_lsf_record({"JOBID": "1", "STAT": stat, "EXIT_CODE": "", "EXIT_REASON": ""})
    assert status.state is entry[0]


def test_other_states():
    assert map_lsf_record({"JOBID": "1", "STAT": "UNKWN"}).state is B.UNKNOWN
    assert map_lsf_record({"JOBID": "1", "STAT": "ZOMBI"}).state is B.NODE_FAIL
    assert map_lsf_record({"JOBID": "1", "STAT": "NEWSTATE"}).reason == \
        "unrecognised LSF state 'NEWSTATE'"


def test_list_queues(fake_runner):
    fake_runner.replies[("bqueues",)] = Reply(stdout=fixture_text("lsf_bqueues.txt"))
    names = [q.name for q in LSFScheduler(runner=fake_runner).list_partitions()]
    assert names == ["owners", "normal", "short"]


def test_cancel(fake_runner):
    fake_runner.replies[("bkill",)] = Reply(
        stderr="Job <5>: Job has already finished\nJob <6>: No matching job found\n",
        returncode=255,
    )
    LSFScheduler(runner=fake_runner).cancel(["5", "6"])
    assert fake_runner.argvs == [["bkill", "5", "6"]]
    fake_runner.replies[("bkill",)] = Reply(stderr="Job <5>: User permission denied\n",
                                            returncode=255)
    with pytest.raises(CommandFailedError, match="permission denied"):
        LSFScheduler(runner=fake_runner).cancel(["5"])
