"""Grid Engine adapter, offline, on output recorded from the real test cluster.

The ``sge_*`` fixtures were recorded from the single-node Son of Grid Engine 8.1.9 cluster
of ``hpc/testcluster/sge.sh`` by ``tests/hpc/fixtures/record_sge.py`` (job ids 63-74 of one
run); ``test_sge_cluster.py`` runs the same adapter against the live cluster. See
tests/hpc/fixtures/README.md.
"""

from __future__ import annotations

import pytest

from matdx.hpc.errors import CommandFailedError, PollError, ResourceError, UnsupportedResourceError
from matdx.hpc.resources import Resources
from matdx.hpc.sge import (
    SGEScheduler,
    map_qacct,
    map_qstat_state,
    parse_qacct,
    parse_sge_size,
    parse_sge_time,
)
from matdx.hpc.status import BatchState

from .conftest import Reply, fixture_text

B = BatchState


def test_header():
    r = Resources(job_name="relax-si", nodes=2, ranks_per_node=16, threads_per_rank=2,
                  walltime="26:03:04", memory="64G", partition="all.q", account="e123",
                  gpus_per_node=1, exclusive=True, output="/s/out.log", error="/s/err.log",
                  working_directory="/s")
    assert SGEScheduler(parallel_environment="mpi", shell="/bin/bash -l").header_lines(r) == [
        "#$ -N relax-si",
        "#$ -S /bin/bash",
        "#$ -l h_rt=26:03:04",
        "#$ -V",
        "#$ -pe mpi 64",
        "#$ -l h_vmem=2048M",
        "#$ -l gpu=1",
        "#$ -l exclusive=true",
        "#$ -q all.q",
        "#$ -A e123",
        "#$ -o /s/out.log",
        "#$ -e /s/err.log",
        "#$ -wd /s",
    ]


def test_single_slot_needs_no_pe_and_site_resource_names():
    sge = SGEScheduler(memory_resource="mem_free", gpu_resource="ngpus",
                       export_environment=False)
    assert sge.header_lines(Resources(job_name="a", walltime=60, memory="2G",
                                      gpus_per_node=1)) == [
        "#$ -N a", "#$ -S /bin/bash", "#$ -l h_rt=00:01:00", "#$ -l mem_free=2048M",
        "#$ -l ngpus=1",
    ]


def test_multi_slot_without_pe_names_the_option():
    with pytest.raises(UnsupportedResourceError, match="parallel_environment"):
        SGEScheduler().header_lines(Resources(walltime=60, ranks_per_node=4))
    with pytest.raises(UnsupportedResourceError, match="qos"):
        SGEScheduler().header_lines(Resources(walltime=60, qos="x"))


def test_options_are_validated():
    with pytest.raises(ResourceError, match="parallel environment name"):
        SGEScheduler(parallel_environment="mpi; rm -rf /")
    with pytest.raises(ResourceError, match="export_environment must be true or false"):
        SGEScheduler(export_environment="yes")


@pytest.mark.parametrize(
    "out", ["4010\n", "4010.1-10:1\n", 'Your job 4010 ("a") has been submitted\n'],
)
def test_job_id(out):
    assert SGEScheduler().parse_job_id(out) == "4010"


def test_submit(fake_runner, tmp_path):
    fake_runner.replies[("qsub",)] = Reply(stdout="4010\n")
    sge = SGEScheduler(runner=fake_runner)
    script = sge.write_script(Resources(walltime=60), ["true"], tmp_path / "job.sh")
    assert sge.submit(script) == "4010"
    assert fake_runner.argvs == [["qsub", "-terse", str(script)]]


def test_parse_recorded_qstat():
    found = SGEScheduler().parse_qstat(fixture_text("sge_qstat.xml"))
    assert {k: (v.state, v.reason, v.native_state) for k, v in found.items()} == {
        "67": (B.RUNNING, "", "r"),
        "69": (B.RUNNING, "", "r"),
        "70": (B.CANCELLED, "being deleted", "dr"),
        "71": (B.RUNNING, "suspended", "s"),
        "72": (B.QUEUED, "", "qw"),
        "74": (B.FAILED, "in error state; it stays queued until cleared (qmod -cj) or deleted",
               "Eqw"),
        "68": (B.QUEUED, "", "Rq"),  # rescheduled by qmod -rj, waiting to run again
        "73": (B.QUEUED, "held", "hqw"),
    }
    assert SGEScheduler().parse_qstat("") == {}
    with pytest.raises(PollError, match="cannot parse qstat XML"):
        SGEScheduler().parse_qstat("<job_info>")


@pytest.mark.parametrize(
    ("name", "state", "exit_code", "signal", "reason"),
    [
        ("completed", B.COMPLETED, 0, None, ""),
        ("failed", B.FAILED, 3, None, "non-zero exit code"),
        ("timeout", B.TIMEOUT, None, 9, "exceeded h_rt=5"),
        # h_vmem is a setrlimit: the program's allocation fails and it exits by itself
        ("memory", B.FAILED, 1, None, "non-zero exit code"),
        ("deleted", B.CANCELLED, None, 9, "killed by signal 9 (qdel, or a kill from outside)"),
        ("setup_failed", B.FAILED, 0, None, "failed 28: changing into working directory"),
        ("two_records", B.COMPLETED, 0, None, ""),  # the last record counts
    ],
)
def test_map_recorded_qacct(name, state, exit_code, signal, reason):
    text = fixture_text(f"sge_qacct_{name}.txt")
    status = map_qacct("63", parse_qacct(text))
    assert (status.state, status.exit_code, status.signal, status.reason) == (
        state, exit_code, signal, reason,
    )


def test_recorded_memory_limit_and_rescheduling_fields():
    memory = parse_qacct(fixture_text("sge_qacct_memory.txt"))
    assert memory["category"] == "-q all.q -l h_rt=300,h_vmem=200M"
    first, _, _ = fixture_text("sge_qacct_two_records.txt").partition("\n=====")
    assert parse_qacct(first)["failed"] == "25  : rescheduling"


def test_qacct_edge_cases():
    assert map_qacct("1", {"failed": "37  : qmaster enforced h_rt, h_cpu, or h_vmem limit",
                           "exit_status": "137"}).state is B.TIMEOUT
    assert map_qacct("1", {"failed": "0", "exit_status": "137",
                           "deleted_by": "alice@login01"}).state is B.CANCELLED
    # a kill by the execd's usage check once maxvmem reached h_vmem (not seen on the test
    # cluster, where h_vmem's setrlimit makes the program fail first)
    assert map_qacct("1", {"failed": "100 : assumedly after job", "exit_status": "137",
                           "category": "-l h_rt=600,h_vmem=1G", "maxvmem": "1.000GB",
                           "ru_wallclock": "33s"}).state is B.OUT_OF_MEMORY
    with pytest.raises(PollError, match="no accounting record"):
        parse_qacct("")


def test_sizes_and_times():
    assert parse_sge_size("1.000GB") == 1024.0**3
    assert parse_sge_size("1g") == 1e9
    assert parse_sge_size("80.000MB") == 80 * 1024.0**2
    assert parse_sge_size("0.000B") == 0
    assert parse_sge_size("lots") is None
    assert [parse_sge_time(t) for t in ("601s", "60", "1:00:00", "12.5", "x")] == \
        [601.0, 60.0, 3600.0, 12.5, None]


@pytest.mark.parametrize(
    ("state", "expected"),
    [("qw", B.QUEUED), ("hqw", B.QUEUED), ("hRwq", B.QUEUED), ("r", B.RUNNING),
     ("t", B.RUNNING), ("Rr", B.RUNNING), ("s", B.RUNNING), ("S", B.RUNNING),
     ("dr", B.CANCELLED), ("dt", B.CANCELLED), ("Eqw", B.FAILED), ("z", B.UNKNOWN)],
)
def test_qstat_states(state, expected):
    assert map_qstat_state("1", state).state is expected


def test_poll_uses_qstat_then_qacct_for_jobs_that_left(fake_runner):
    fake_runner.replies[("qstat",)] = Reply(stdout=fixture_text("sge_qstat.xml"))
    fake_runner.replies[("qacct", "-j", "65")] = Reply(
        stdout=fixture_text("sge_qacct_timeout.txt"))
    fake_runner.replies[("qacct", "-j", "999999")] = Reply(
        stderr=fixture_text("sge_qacct_unknown.stderr"), returncode=1)
    statuses = SGEScheduler(runner=fake_runner).poll(["69", "65", "999999", "72"])
    assert fake_runner.argvs == [["qstat", "-xml"], ["qacct", "-j", "65"],
                                 ["qacct", "-j", "999999"]]
    assert [s.state for s in statuses.values()] == [B.RUNNING, B.TIMEOUT, B.UNKNOWN, B.QUEUED]


def test_poll_raises_when_qacct_fails_otherwise(fake_runner):
    fake_runner.replies[("qstat",)] = Reply(stdout="<job_info/>")
    fake_runner.replies[("qacct",)] = Reply(
        stderr="error: can't open accounting file: Permission denied\n", returncode=1)
    with pytest.raises(CommandFailedError, match="accounting file"):
        SGEScheduler(runner=fake_runner).poll(["1"])


def test_list_queues_and_cancel(fake_runner):
    fake_runner.replies[("qconf", "-sq", "*")] = Reply(stdout=fixture_text("sge_qconf_sq.txt"))
    [queue] = SGEScheduler(runner=fake_runner).list_partitions()
    assert (queue.name, queue.cpus_per_node, queue.nodes, queue.max_walltime) == \
        ("all.q", 8, 1, None)
    two = "qname a.q\nhostlist @allhosts\nslots 1,[n1=16], \\\n  [n2=32]\nh_rt 2:00:00\n\n" \
          "qname b.q\nhostlist n1 n2\nslots 4\nh_rt INFINITY\n"
    fake_runner.replies[("qconf", "-sq", "*")] = Reply(stdout=two)
    assert [(q.name, q.cpus_per_node, q.nodes, q.max_walltime)
            for q in SGEScheduler(runner=fake_runner).list_partitions()] == \
        [("a.q", 32, None, 7200), ("b.q", 4, 2, None)]
    fake_runner.replies[("qdel", "70")] = Reply(stdout=fixture_text("sge_qdel.txt"))
    SGEScheduler(runner=fake_runner).cancel(["70"])
    fake_runner.replies[("qdel",)] = Reply(stderr=fixture_text("sge_qdel_unknown.stderr"),
                                           returncode=1)
    SGEScheduler(runner=fake_runner).cancel(["999999"])
    assert fake_runner.argvs[-1] == ["qdel", "999999"]


def test_output_without_error_file_joins_stderr():
    lines = SGEScheduler().header_lines(Resources(walltime=60, output="/s/out.log"))
    assert lines[-2:] == ["#$ -o /s/out.log", "#$ -j y"]
