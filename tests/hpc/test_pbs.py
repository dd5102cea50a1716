"""PBS Professional and Torque adapters, offline.

PBS cannot run on this machine: the adapters are tested against recorded command
output written by hand from the documentation (PBS Professional Reference Guide
``qstat -f -F json`` and job exit codes, OpenPBS ``job.h``; Torque admin guide
``qstat -f -x`` XML and exit codes). See tests/hpc/fixtures/README.md.
"""

from __future__ import annotations

import pytest

from matdx.hpc.errors import CommandFailedError, PollError, UnsupportedResourceError
from matdx.hpc.pbs import (
    PBSPRO_EXIT_CODES,
    TORQUE_EXIT_CODES,
    PBSProScheduler,
    TorqueScheduler,
    classify_pbs_exit,
    loads_pbs_json,
)
from matdx.hpc.resources import Resources
from matdx.hpc.status import BatchState

from .conftest import Reply, fixture_text

B = BatchState
QSTAT = ("qstat",)


def resources(**kw) -> Resources:
    base = dict(job_name="relax-si", nodes=2, ranks_per_node=16, threads_per_rank=2,
                walltime="26:03:04", memory="64G", partition="workq", account="e123",
                output="/scratch/r/out.log", error="/scratch/r/err.log",
                working_directory="/scratch/r")
    return Resources(**{**base, **kw})


# ---------------------------------------------------------------- PBS Pro
def test_pbspro_header():
    assert PBSProScheduler().header_lines(resources(gpus_per_node=4, exclusive=True)) == [
        "#PBS -N relax-si",
        "#PBS -l select=2:ncpus=32:mpiprocs=16:ompthreads=2:mem=65536mb:ngpus=4",
        "#PBS -l place=scatter:excl",
        "#PBS -l walltime=26:03:04",
        "#PBS -q workq",
        "#PBS -A e123",
        "#PBS -o /scratch/r/out.log",
        "#PBS -e /scratch/r/err.log",
    ]


def test_pbspro_minimal_header_and_body_cd():
    text = PBSProScheduler().render(Resources(job_name="a", walltime=60,
                                              working_directory="/w"), ["true"])
    assert text.splitlines()[1:5] == [
        "#PBS -N a",
        "#PBS -l select=1:ncpus=1:mpiprocs=1:ompthreads=1",
        "#PBS -l place=scatter",
        "#PBS -l walltime=00:01:00",
    ]
    assert "cd -- /w || exit 1" in text


def test_pbspro_rejects_qos():
    with pytest.raises(UnsupportedResourceError, match="qos: PBS Professional has no QOS"):
        PBSProScheduler().header_lines(resources(qos="high"))


def test_pbs_submit_and_job_id(fake_runner, tmp_path):
    fake_runner.replies[("qsub",)] = Reply(stdout="1001.pbs01\n")
    pbs = PBSProScheduler(runner=fake_runner)
    script = pbs.write_script(Resources(walltime=60), ["true"], tmp_path / "job.sh")
    assert pbs.submit(script) == "1001.pbs01"
    assert fake_runner.calls[0]["argv"] == ["qsub", str(script)]
    assert TorqueScheduler().parse_job_id("2001.torque01.example.org\n") == \
        "2001.torque01.example.org"


def test_pbspro_parse_recorded_qstat():
    found = PBSProScheduler().parse_qstat(fixture_text("pbspro_qstat.json"))
    summary = {k: (v.state, v.exit_code, v.signal) for k, v in found.items()}
    assert summary == {
        "1001.pbs01": (B.COMPLETED, 0, None),
        "1002.pbs01": (B.FAILED, 3, None),
        "1003.pbs01": (B.TIMEOUT, -29, None),
        "1004.pbs01": (B.OUT_OF_MEMORY, -27, None),
        "1005.pbs01": (B.CANCELLED, None, 15),
        "1006.pbs01": (B.CANCELLED, None, None),
        "1007.pbs01": (B.RUNNING, None, None),
        "1008.pbs01": (B.QUEUED, None, None),
        "1009.pbs01": (B.QUEUED, None, None),
        "1010.pbs01": (B.TIMEOUT, None, 15),
        "1011.pbs01": (B.NODE_FAIL, -20, None),
        "1012.pbs01": (B.RUNNING, None, None),
    }
    assert "KILL_WALLTIME" in found["1003.pbs01"].reason
    assert found["1006.pbs01"].reason == "deleted before it ran"
    assert "Insufficient amount of resource: ncpus" in found["1008.pbs01"].reason
    assert found["1009.pbs01"].reason == "held"
    assert found["1012.pbs01"].reason == "exiting"
    assert found["1003.pbs01"].native_state == "F"


def test_pbspro_poll_one_command_with_unknown_ids(fake_runner):
    fake_runner.replies[QSTAT] = Reply(
        stdout=fixture_text("pbspro_qstat.json"),
        stderr="qstat: Unknown Job Id 999.pbs01\nqstat: Unknown Job Id 998.pbs01\n",
        returncode=153,
    )
    statuses = PBSProScheduler(runner=fake_runner).poll(["1001.pbs01", "999.pbs01", "1003"])
    assert fake_runner.argvs == [
        ["qstat", "-f", "-F", "json", "-x", "1001.pbs01", "999.pbs01", "1003"]
    ]
    assert statuses["1001.pbs01"].state is B.COMPLETED
    assert statuses["999.pbs01"].state is B.UNKNOWN
    assert "history" in statuses["999.pbs01"].reason
    # a bare sequence number matches the server's full id
    assert statuses["1003"].state is B.TIMEOUT
    assert statuses["1003"].job_id == "1003"


def test_pbspro_poll_all_unknown_prints_no_json(fake_runner):
    fake_runner.replies[QSTAT] = Reply(stderr="qstat: Unknown Job Id 5.pbs01\n", returncode=153)
    assert PBSProScheduler(runner=fake_runner).poll(["5.pbs01"])["5.pbs01"].state is B.UNKNOWN


def test_pbspro_poll_raises_on_server_errors(fake_runner):
    fake_runner.replies[QSTAT] = Reply(
        stderr="Connection refused\nqstat: cannot connect to server pbs01 (errno=111)\n",
        returncode=2,
    )
    with pytest.raises(CommandFailedError, match="cannot connect to server") as info:
        PBSProScheduler(runner=fake_runner).poll(["5.pbs01"])
    assert info.value.returncode == 2


def test_pbspro_tolerates_invalid_json_escapes():
    data = loads_pbs_json(fixture_text("pbspro_qstat_bad_escape.json"))
    env = data["Jobs"]["1101.pbs01"]["Variable_List"]
    assert env["PS1"] == "[\\u@\\h \\W]\\$ "
    assert env["NOTE"] == "tab\tinside"
    assert loads_pbs_json('{"a": "x\\\\h \\n \\u0041 \\q"}') == {"a": "x\\h \n A \\q"}
    with pytest.raises(PollError, match="cannot parse qstat JSON"):
        loads_pbs_json("{not json")


@pytest.mark.parametrize(("code", "entry"), sorted(PBSPRO_EXIT_CODES.items()))
def test_pbspro_negative_codes(code, entry):
    status = classify_pbs_exit(code, PBSPRO_EXIT_CODES)
    assert (status.state, status.reason, status.exit_code) == (entry[0], entry[1], code)


def test_classify_pbs_exit_signals_and_codes():
    codes = PBSPRO_EXIT_CODES
    assert classify_pbs_exit(0, codes).state is B.COMPLETED
    assert classify_pbs_exit(1, codes).state is B.FAILED
    assert classify_pbs_exit(1, codes, deleted=True).state is B.CANCELLED
    assert classify_pbs_exit(254, codes).reason == "execve() of the job script failed"
    killed = classify_pbs_exit(137, codes)
    assert (killed.state, killed.signal) == (B.FAILED, 9)
    assert classify_pbs_exit(265, codes, used_walltime=100, requested_walltime=100).state \
        is B.TIMEOUT
    assert classify_pbs_exit(265, codes, used_walltime=99, requested_walltime=100).state \
        is B.FAILED
    assert classify_pbs_exit(-99, codes).reason == "scheduler exit code -99"
    assert classify_pbs_exit(None, codes).state is B.UNKNOWN


def test_pbspro_queues(fake_runner):
    fake_runner.replies[QSTAT] = Reply(stdout=fixture_text("pbspro_queues.json"))
    queues = {q.name: q for q in PBSProScheduler(runner=fake_runner).list_partitions()}
    assert fake_runner.argvs == [["qstat", "-Q", "-f", "-F", "json"]]
    assert queues["workq"].max_walltime == 48 * 3600
    assert queues["workq"].nodes == 64
    assert queues["express"].max_walltime == 3600


def test_pbs_cancel(fake_runner):
    fake_runner.replies[("qdel",)] = Reply(
        stderr="qdel: Unknown Job Id 7.pbs01\nqdel: Job 8.pbs01 has finished\n", returncode=35,
    )
    PBSProScheduler(runner=fake_runner).cancel(["7.pbs01", "8.pbs01"])
    assert fake_runner.argvs == [["qdel", "7.pbs01", "8.pbs01"]]
    fake_runner.replies[("qdel",)] = Reply(stderr="qdel: Unauthorized Request  7.pbs01\n",
                                           returncode=159)
    with pytest.raises(CommandFailedError, match="Unauthorized"):
        PBSProScheduler(runner=fake_runner).cancel(["7.pbs01"])


# ---------------------------------------------------------------- Torque
def test_torque_header():
    lines = TorqueScheduler().header_lines(resources(qos="high", gpus_per_node=2,
                                                     exclusive=True))
    assert lines == [
        "#PBS -N relax-si",
        "#PBS -l nodes=2:ppn=32:gpus=2",
        "#PBS -l mem=131072mb",
        "#PBS -l qos=high",
        "#PBS -n",
        "#PBS -l walltime=26:03:04",
        "#PBS -q workq",
        "#PBS -A e123",
        "#PBS -o /scratch/r/out.log",
        "#PBS -e /scratch/r/err.log",
        "#PBS -d /scratch/r",
    ]


def test_torque_parse_recorded_qstat():
    found = TorqueScheduler().parse_qstat(fixture_text("torque_qstat.xml"))
    summary = {k.split(".")[0]: (v.state, v.exit_code, v.signal) for k, v in found.items()}
    assert summary == {
        "2001": (B.COMPLETED, 0, None),
        "2002": (B.FAILED, 3, None),
        "2003": (B.TIMEOUT, -11, None),
        "2004": (B.TIMEOUT, None, 9),
        "2005": (B.FAILED, None, 15),
        "2006": (B.RUNNING, None, None),
        "2007": (B.QUEUED, None, None),
        "2008": (B.QUEUED, None, None),
        "2009": (B.OUT_OF_MEMORY, -10, None),
    }
    assert "OVERLIMIT_WT" in found["2003.torque01.example.org"].reason


def test_torque_poll(fake_runner):
    fake_runner.replies[QSTAT] = Reply(
        stdout=fixture_text("torque_qstat.xml"),
        stderr="qstat: Unknown Job Id Error 1999.torque01.example.org\n", returncode=153,
    )
    statuses = TorqueScheduler(runner=fake_runner).poll(
        ["2001.torque01", "1999.torque01.example.org"]
    )
    assert fake_runner.argvs == [
        ["qstat", "-f", "-x", "2001.torque01", "1999.torque01.example.org"]
    ]
    assert statuses["2001.torque01"].state is B.COMPLETED
    assert statuses["1999.torque01.example.org"].state is B.UNKNOWN


def test_torque_empty_output_means_no_jobs(fake_runner):
    # Torque < 6.1 prints nothing instead of an empty XML document.
    assert TorqueScheduler().parse_qstat("") == {}
    with pytest.raises(PollError, match="cannot parse qstat XML"):
        TorqueScheduler().parse_qstat("<Data><Job>")


@pytest.mark.parametrize(("code", "entry"), sorted(TORQUE_EXIT_CODES.items()))
def test_torque_negative_codes(code, entry):
    assert classify_pbs_exit(code, TORQUE_EXIT_CODES).state is entry[0]


def test_torque_queues(fake_runner):
    fake_runner.replies[QSTAT] = Reply(stdout=fixture_text("torque_qstat_queues.txt"))
    queues = TorqueScheduler(runner=fake_runner).list_partitions()
    assert [(q.name, q.max_walltime) for q in queues] == [("batch", 72 * 3600), ("debug", 1800)]
    assert fake_runner.argvs == [["qstat", "-Q", "-f"]]
