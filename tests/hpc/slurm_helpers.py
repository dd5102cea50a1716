"""Helpers of the tests that use the real single-node Slurm test cluster."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

from matdx.hpc.scheduler import CommandResult, Scheduler, _call
from matdx.hpc.status import JobStatus

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPT = REPO / "hpc" / "testcluster" / "cluster.sh"
START_HINT = (
    "the Slurm test cluster is not running; start it (as root) with\n"
    f"    bash {CLUSTER_SCRIPT.relative_to(REPO)} start --cpus 8\n"
    "and check it with\n"
    f"    bash {CLUSTER_SCRIPT.relative_to(REPO)} status"
)


def require_cluster(min_cpus: int = 1) -> int:
    """Fail (never skip) unless the test cluster's node accepts jobs; return its CPU count."""
    if shutil.which("sinfo") is None:
        pytest.fail(f"Slurm commands are not installed. {START_HINT}")
    try:
        proc = subprocess.run(["sinfo", "--noheader", "--format=%T %c"], capture_output=True,
                              text=True, timeout=20, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"sinfo did not answer within 20 s. {START_HINT}")
    words = proc.stdout.split()
    if proc.returncode != 0 or len(words) < 2:
        pytest.fail(f"sinfo failed ({proc.stderr.strip() or proc.stdout.strip()}). {START_HINT}")
    state, cpus = words[0].rstrip("*~#$@+"), int(words[1].rstrip("+"))
    if state not in ("idle", "mixed", "allocated", "completing"):
        pytest.fail(f"the test cluster's node is {state!r}, not idle. {START_HINT}")
    if cpus < min_cpus:
        pytest.fail(f"the test cluster advertises {cpus} CPUs, these tests need {min_cpus}. "
                    f"{START_HINT}")
    return cpus


class RecordingRunner:
    """Runs commands with the real ``_call`` and remembers every command line."""

    def __init__(self) -> None:
        self.argvs: list[list[str]] = []

    def __call__(self, argv: Sequence[str], **kwargs: Any) -> CommandResult:
        self.argvs.append(list(argv))
        return _call(argv, **kwargs)


def wait_until_final(
    scheduler: Scheduler, job_ids: Iterable[str], timeout: float, interval: float = 2.0,
) -> dict[str, JobStatus]:
    """Poll all ``job_ids`` together until every one is final; fail after ``timeout`` s."""
    ids = list(job_ids)
    deadline = time.monotonic() + timeout
    while True:
        statuses = scheduler.poll(ids)
        if all(s.state.is_final for s in statuses.values()):
            return statuses
        if time.monotonic() > deadline:
            pytest.fail(f"jobs not finished after {timeout} s: {statuses}")
        time.sleep(interval)


def wait_until_running(scheduler: Scheduler, job_id: str, timeout: float) -> JobStatus:
    """Poll one job until it runs; fail if it ends or does not start within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        status = scheduler.poll([job_id])[job_id]
        if status.state.value == "running":
            return status
        if status.state.is_final or time.monotonic() > deadline:
            pytest.fail(f"job {job_id} did not start running: {status}")
        time.sleep(1.0)


def python_without(module: str, directory: Path) -> Path:
    """A real Python environment in ``directory`` with every package of this one except
    ``module`` (a new venv whose site-packages links to ours): what a user gets when the
    batch job's Python lacks a package. Returns its ``python``."""
    import sys
    import sysconfig

    if not (directory / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(directory)],
                       check=True, capture_output=True)
    ours = Path(sysconfig.get_paths()["purelib"])
    theirs = directory / ours.relative_to(sys.prefix)
    for entry in ours.iterdir():
        if entry.name.split("-")[0] == module or entry.name == module:
            continue
        link = theirs / entry.name
        if not link.exists():
            link.symlink_to(entry.resolve())
    return directory / "bin" / "python"
