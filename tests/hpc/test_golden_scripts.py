"""The batch scripts every scheduler adapter renders for the same resources, compared with
golden files reviewed by hand (tests/hpc/golden/). Set MATDX_WRITE_GOLDEN=1 to rewrite them
after an intended change, then review the diff."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from matdx.hpc import Resources, make_scheduler

GOLDEN = Path(__file__).parent / "golden"
RESOURCES = Resources(
    job_name="relax-si", walltime="02:00:00", nodes=2, ranks_per_node=4, threads_per_rank=2,
    memory="8G", partition="batch", account="mat123", modules=["quantum-espresso/6.7"],
    environment={"ESPRESSO_TMPDIR": "/scratch/$USER/tmp"}, pre_commands=["echo start"],
    post_commands=["echo done"], output="job.out", error="job.err",
    working_directory="/scratch/run1",
)
COMMANDS = [["mpirun", "pw.x", "-in", "pw.in"]]
ADAPTERS = {"slurm": {}, "pbspro": {}, "torque": {}, "lsf": {},
            "sge": {"parallel_environment": "mpi"}}


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_rendered_script_matches_its_golden_file(name):
    script = make_scheduler(name, **ADAPTERS[name]).render(RESOURCES, COMMANDS)
    golden = GOLDEN / f"{name}.sh"
    if os.environ.get("MATDX_WRITE_GOLDEN") == "1":
        golden.write_text(script)
    assert script == golden.read_text()
