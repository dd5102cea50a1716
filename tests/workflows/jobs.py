"""Job functions used by the workflow tests (importable by the task farm's workers)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from matdx.workflows import ArtifactFile, Flow, Response, job


@job
def add(a, b):
    return a + b


@job
def total(values):
    return sum(values)


@job(retries=1)
def fail(message="this job always fails"):
    raise RuntimeError(message)


@job(retries=3)
def fail_until(marker_dir, succeed_on_attempt):
    """Fails until it has been called ``succeed_on_attempt`` times (counted in files)."""
    directory = Path(marker_dir)
    directory.mkdir(parents=True, exist_ok=True)
    calls = len(list(directory.iterdir())) + 1
    (directory / f"call-{calls}").touch()
    if calls < succeed_on_attempt:
        raise ValueError(f"call {calls} fails")
    return calls


@job
def sleep(seconds, value=None):
    time.sleep(seconds)
    return value


@job
def write_file(text):
    Path("data.txt").write_text(text)
    return {"file": ArtifactFile("data.txt", media_type="text/plain"), "length": len(text)}


@job
def read_file(file):
    return Path(file.path).read_text()


@job
def array_stats(values):
    array = np.asarray(values)
    return {"mean": float(array.mean()), "squares": array**2}


@job
def grow_until(value, limit):
    """Adds jobs until ``value`` reaches ``limit``; the last job's output replaces this one's."""
    if value >= limit:
        return value
    following = grow_until(value + 1, limit)
    return Response(output=value, replace=Flow([following]))


@job
def with_detour(value):
    return Response(output=value, detour=Flow([add(value, 100)]))


@job
def with_addition(value):
    return Response(output=value, addition=Flow([add(value, 1000)]))


@job
def stop_below(value):
    return Response(output=value, stop_children=True)


@job
def pid():
    return os.getpid()


class NeedsMoreRoom(RuntimeError):
    """A failure whose error handler asks for half the ranks and twice the run time."""

    kind = "resources"

    def __init__(self) -> None:
        super().__init__("out of memory")
        self.correction = {
            "handler": "memory",
            "description": "halve the ranks, double the time",
            "max_corrections": 2,
            "inputs_update": {},
            "resources_update": {"ranks_factor": 0.5, "walltime_factor": 2.0},
        }


@job(resources={"cores": 2, "estimate_s": 10.0})
def resources_after_memory_error(marker):
    """Fails once with a resource correction, then returns the resources it ran with."""
    from pathlib import Path

    from matdx.workflows.run import job_resources

    if not Path(marker).exists():
        Path(marker).write_text("failed once")
        raise NeedsMoreRoom()
    return job_resources()


@job(resources={"cores": 64})
def wide():
    return 64


@job
def add_reading(job_id):
    """Adds a job that reads the output of job ``job_id`` (of any campaign) plus one."""
    from matdx.workflows.reference import OutputReference

    return Response(output=0, addition=Flow([add(OutputReference(job_id), 1)]))


class Diagnosed(RuntimeError):
    """A failure that an error handler diagnosed as ``kind``, with an optional correction
    that sets ``step`` to one more than before (the job never succeeds)."""

    def __init__(self, kind: str, step: int | None) -> None:
        super().__init__(f"{kind} failure at step {step}")
        self.kind = kind
        self.correction = None if step is None else {
            "handler": f"{kind}_fixer",
            "description": f"step {step} -> {step + 1}",
            "max_corrections": 50,
            "errors": [f"{kind}_error"],
            "actions": [{"dict": "INPUT", "action": {"_set": {"step": step + 1}}}],
            "inputs_update": {"kwargs": {"step": step + 1}},
            "resources_update": {},
        }


@job(retries=3)
def always_fails(kind, corrected, step=0):
    """Fails with a diagnosed failure of ``kind``, corrected (a new ``step``) or not."""
    raise Diagnosed(kind, step if corrected else None)
