"""The PBS Professional adapter on output recorded from a real OpenPBS 23.06.06 server.

The outputs were captured by the FirecREST v2 project (ETH Zurich / CSCS) from its OpenPBS
test cluster and published as test data (BSD-3-Clause): repository eth-cscs/firecrest-v2,
commit 35e1d08026a9ff96f0dccadddc75653571b21f4d, ``tests/mocked_ssh_outputs/`` files
``ssh_qstat_allusers_command.json`` (``qstat -F json -f -x``), ``ssh_qstat_partitions_command
.json`` (``qstat -F json -f -Q``) and ``ssh_qsub_command.json`` (``qsub``); the fixtures hold
their ``stdout`` unchanged. See tests/hpc/fixtures/README.md.
"""

from __future__ import annotations

from matdx.hpc.pbs import PBSProScheduler
from matdx.hpc.status import BatchState

from .conftest import Reply, fixture_text

B = BatchState


def test_qsub_output_gives_the_server_qualified_id():
    assert PBSProScheduler().parse_job_id(fixture_text("pbspro_openpbs23_qsub.txt")) == "1.pbs"


def test_finished_and_running_jobs_of_qstat_x():
    found = PBSProScheduler().parse_qstat(fixture_text("pbspro_openpbs23_qstat_x.json"))
    assert {k: (v.state, v.exit_code, v.signal, v.native_state) for k, v in found.items()} == {
        "1004.pbs": (B.COMPLETED, 0, None, "F"),
        "1005.pbs": (B.COMPLETED, 0, None, "F"),
        "1006.pbs": (B.RUNNING, None, None, "R"),
    }


def test_poll_matches_the_ids_qsub_printed(fake_runner):
    fake_runner.replies[("qstat",)] = Reply(stdout=fixture_text("pbspro_openpbs23_qstat_x.json"))
    statuses = PBSProScheduler(runner=fake_runner).poll(["1004.pbs", "1006.pbs"])
    assert fake_runner.argvs == [["qstat", "-f", "-F", "json", "-x", "1004.pbs", "1006.pbs"]]
    assert [s.state for s in statuses.values()] == [B.COMPLETED, B.RUNNING]


def test_queue_without_limits(fake_runner):
    fake_runner.replies[("qstat",)] = Reply(stdout=fixture_text("pbspro_openpbs23_queues.json"))
    [queue] = PBSProScheduler(runner=fake_runner).list_partitions()
    assert (queue.name, queue.max_walltime, queue.nodes, queue.cpus_per_node) == \
        ("workq", None, None, None)
