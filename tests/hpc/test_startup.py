"""Reading why a batch job died before its farm started (``matdx.hpc.startup``)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from matdx.hpc.startup import output_cause, read_tail, startup_cause

FIXTURES = Path(__file__).parent / "fixtures"


def test_the_python_error_of_a_real_batch_output_is_the_cause():
    # Recorded on the Slurm test cluster: benchmarks/slurm_packing.py run with a Python
    # lacking mpi4py; 9 MPI ranks each print the traceback, then mpirun's own report.
    path = FIXTURES / "slurm_batch_out_no_mpi4py.txt"
    assert "mpirun detected" in path.read_text()
    assert output_cause(path) == "ModuleNotFoundError: No module named 'mpi4py'"


def test_the_batch_directory_and_job_id_are_replaced_so_two_jobs_agree():
    causes = {
        startup_cause(
            f"{directory}/batch.sh: line 17: module: command not found\n",
            placeholders=[(directory, "BATCH_DIR"), (job, "JOB_ID")],
        )
        for directory, job in (("/scratch/b/1111", "41"), ("/scratch/b/2222", "42"))
    }
    assert causes == {"BATCH_DIR/batch.sh: line 17: module: command not found"}


def test_launcher_noise_alone_names_no_cause():
    text = (FIXTURES / "slurm_batch_out_no_mpi4py.txt").read_text()
    tail = text[text.index("-----"):]
    assert startup_cause(tail) is None
    assert startup_cause("") is None


def test_control_characters_in_the_output_are_not_passed_on():
    cause = startup_cause("RuntimeError: bad \x1b[31mred\x1b[0m\n")
    assert cause == "RuntimeError: bad ?[31mred?[0m"


def test_an_output_that_is_a_fifo_or_missing_is_read_as_empty(tmp_path):
    fifo = tmp_path / "batch.out"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(read_tail(fifo)))
    reader.start()
    reader.join(timeout=10)
    assert not reader.is_alive() and got == [""]
    assert read_tail(tmp_path / "missing") == ""
