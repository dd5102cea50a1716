"""Finding a batch job by name, the way a submitter finds a submission it lost.

The scheduler outputs are replayed (PBS, LSF and SGE servers cannot run here); Slurm's
``find_by_name`` runs against the real test cluster in tests/workflows/test_slurm_executor.py.
"""

from __future__ import annotations

import pytest

from matdx.hpc.lsf import LSFScheduler
from matdx.hpc.pbs import PBSProScheduler, TorqueScheduler
from matdx.hpc.sge import SGEScheduler
from matdx.hpc.slurm import SlurmScheduler
from tests.hpc.conftest import Reply, fixture_text


@pytest.mark.parametrize(
    ("scheduler", "argv", "stdout", "found"),
    [
        (SlurmScheduler, ["squeue", "--noheader", "--format=%i", "--name=matdx-b1"],
         "1234\n1240\n", ["1234", "1240"]),
        (PBSProScheduler, ["qselect", "-N", "matdx-b1"], "17.pbs01\n", ["17.pbs01"]),
        (TorqueScheduler, ["qselect", "-N", "matdx-b1"], "", []),
        (LSFScheduler, ["bjobs", "-noheader", "-o", "jobid", "-J", "matdx-b1"], "5512\n",
         ["5512"]),
    ],
)
def test_jobs_are_found_by_name_with_one_command(fake_runner, scheduler, argv, stdout, found):
    fake_runner.replies[tuple(argv)] = Reply(stdout=stdout)
    assert scheduler(runner=fake_runner).find_by_name("matdx-b1") == found
    assert fake_runner.argvs == [argv]


def test_grid_engine_lists_all_jobs_and_picks_the_name(fake_runner):
    fake_runner.replies[("qstat", "-xml")] = Reply(stdout=fixture_text("sge_qstat.xml"))
    assert SGEScheduler(runner=fake_runner).find_by_name("matdx-queued") == ["72"]
    assert SGEScheduler(runner=fake_runner).find_by_name("matdx-nothing") == []


def test_no_job_is_an_empty_answer_and_a_failure_finds_nothing(fake_runner, caplog):
    fake_runner.replies[("bjobs",)] = Reply(stderr="No unfinished job found\n", returncode=255)
    assert LSFScheduler(runner=fake_runner).find_by_name("matdx-b1") == []
    assert "failed" not in caplog.text
    fake_runner.replies[("squeue",)] = Reply(stderr="slurm_load_jobs error\n", returncode=1)
    assert SlurmScheduler(runner=fake_runner).find_by_name("matdx-b1") == []
    assert "squeue failed: slurm_load_jobs error" in caplog.text
