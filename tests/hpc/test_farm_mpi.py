"""The task farm under MPI (``mpirun ... python -m matdx.hpc.farm MANIFEST --mpi``).

Runs real ``mpirun`` with Open MPI from Debian and mpi4py from PyPI on this machine (no
Slurm needed); ranks are oversubscribed, as on the test cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from matdx.hpc.farm import Manifest, Task, read_events

RUNNER = "tests.hpc.test_farm_mpi:runner"
REPO = Path(__file__).resolve().parents[2]
MPI_ENV = {
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMPI_MCA_rmaps_base_oversubscribe": "1",
}


def runner(directory: str) -> str:
    """Sleeps as ``task.json`` says; records whether MPI leaked into the task's process."""
    spec = json.loads((Path(directory) / "task.json").read_text())
    started = time.time()
    time.sleep(spec.get("sleep", 0.0))
    leaked = "mpi4py" in sys.modules or "OMPI_COMM_WORLD_RANK" in os.environ
    (Path(directory) / "ran").write_text(f"{started} {time.time()} {os.getpid()} {leaked}")
    return spec.get("status", "completed")


def make(tmp_path: Path, tasks: dict[str, dict], **manifest) -> Path:
    entries = []
    for name, spec in tasks.items():
        directory = tmp_path / name
        directory.mkdir()
        (directory / "task.json").write_text(json.dumps(spec))
        entries.append(
            Task(name, str(directory), tuple(spec.get("after", ())), spec.get("cores", 1),
                 spec.get("estimate"))
        )
    batch = tmp_path / "batch"
    batch.mkdir()
    Manifest("mpi-batch", RUNNER, entries, **manifest).dump(batch / "m.json")
    return batch / "m.json"


def mpirun(manifest: Path, ranks: int, **popen) -> subprocess.Popen:
    if shutil.which("mpirun") is None:
        pytest.fail("mpirun is missing: apt-get install openmpi-bin libopenmpi-dev")
    env = {**os.environ, **MPI_ENV, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        ["mpirun", "-np", str(ranks), sys.executable, "-m", "matdx.hpc.farm", str(manifest),
         "--mpi"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen,
    )


def ran(tmp_path: Path, name: str) -> tuple[float, float, bool]:
    start, end, _, leaked = (tmp_path / name / "ran").read_text().split()
    return float(start), float(end), leaked == "True"


def test_ranks_run_tasks_of_several_sizes_and_dependents_in_one_farm(tmp_path):
    manifest = make(
        tmp_path,
        {
            "wide": {"sleep": 6.0, "cores": 3},
            "one": {"sleep": 0.5},
            "child": {"after": ["one"]},
            "failed": {"status": "failed"},
            "below-failed": {"after": ["failed"]},
            "too-wide": {"cores": 6},
        },
    )
    farm = mpirun(manifest, ranks=6)  # rank 0 schedules, 5 worker ranks
    output, _ = farm.communicate(timeout=120)
    assert farm.returncode != 0, output  # exit code 3: not every task completed
    events = read_events(manifest.parent)
    ends = {e["task"]: e["status"] for e in events if e["event"] == "end"}
    assert ends == {"wide": "completed", "one": "completed", "child": "completed",
                    "failed": "failed"}
    starts = {e["task"]: e for e in events if e["event"] == "start"}
    finished = {e["task"]: e["t"] for e in events if e["event"] == "end"}
    assert starts["wide"]["cores"] == 3 and events[0]["slots"] == 5
    wide0, wide1, leaked = ran(tmp_path, "wide")
    one0, one1, _ = ran(tmp_path, "one")
    assert max(wide0, one0) < min(wide1, one1)  # side by side on 3 + 1 ranks
    # started as soon as its parent ended (a rank was free), while the wide task still ran,
    # and only after the parent's end event (its files durable first)
    assert one1 <= finished["one"] <= starts["child"]["t"] < finished["wide"]
    assert not leaked  # tasks run in their own process, outside the MPI job
    assert events[-1]["event"] == "farm-end" and events[-1]["unfinished"] == 3


def test_no_task_starts_that_would_outlast_the_walltime(tmp_path):
    manifest = make(
        tmp_path,
        {"quick": {"sleep": 0.2, "estimate": 5.0}, "long": {"estimate": 500.0}, "unknown": {}},
        walltime_s=120.0,
        margin_s=20.0,
    )
    farm = mpirun(manifest, ranks=3)
    farm.communicate(timeout=120)
    events = read_events(manifest.parent)
    ends = {e["task"]: e["status"] for e in events if e["event"] == "end"}
    assert ends == {"quick": "completed", "unknown": "completed"}
    start = events[0]
    assert start["deadline"] == pytest.approx(start["t"] + 100.0, abs=1.0)


def test_a_signalled_farm_records_its_end_and_stops_every_rank(tmp_path):
    manifest = make(tmp_path, {f"t{i}": {"sleep": 60} for i in range(3)})
    farm = mpirun(manifest, ranks=3, start_new_session=True)
    deadline = time.monotonic() + 60
    while sum(e["event"] == "start" for e in read_events(manifest.parent)) < 2:
        assert time.monotonic() < deadline, "tasks did not start"
        time.sleep(0.2)
    os.killpg(farm.pid, signal.SIGTERM)  # what scancel and the walltime do to the job
    farm.communicate(timeout=60)
    events = read_events(manifest.parent)
    assert events[-1]["event"] == "farm-end" and events[-1]["reason"] == "signal SIGTERM"
    assert not any(e["event"] == "end" for e in events)  # killed tasks are not reported
