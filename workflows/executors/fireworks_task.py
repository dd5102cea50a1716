"""The Firetask that runs one matdx job attempt from its run directory inside FireWorks.

FireWorks loads it by name (``{{matdx.workflows.executors.fireworks_task.RunJobTask}}``) on
whatever machine ``rlaunch`` or ``qlaunch`` runs. It does what ``python -m
matdx.workflows.run RUNDIR`` does, in the launcher's process, and never touches the matdx
store: the job's result stays in ``RUNDIR/result.json`` for the tick to harvest.

How the job's end becomes the Firework's state:

* completed: the Firework COMPLETES and its children may start;
* completed with a response that changes the graph (detour, replace, stop_children): the
  Firework COMPLETES and defuses its children, which the tick requeues after it applied the
  response;
* failed, or skipped because a parent's result is missing: the Firetask raises, the Firework
  FIZZLES, and its children never start.

This module imports FireWorks at the top; only FireWorks and the fireworks executor load it.
"""

from __future__ import annotations

from typing import Any

from fireworks import FiretaskBase, FWAction, explicit_serialize

from matdx.workflows.run import TaskStatus
from matdx.workflows.run import run_task as run_job_directory

__all__ = ["JobNotCompleted", "RunJobTask"]


class JobNotCompleted(RuntimeError):
    """The matdx job failed or could not start; its ``result.json`` says why."""


@explicit_serialize
class RunJobTask(FiretaskBase):
    """Run the matdx job in ``run_dir`` (an absolute path on a file system the launcher sees)."""

    required_params = ("run_dir",)

    def run_task(self, fw_spec: dict[str, Any]) -> FWAction:
        status = run_job_directory(self["run_dir"])
        stored = {"matdx_status": status, "run_dir": self["run_dir"]}
        if status == TaskStatus.COMPLETED:
            return FWAction(stored_data=stored)
        if status == TaskStatus.HELD:
            return FWAction(stored_data=stored, defuse_children=True)
        raise JobNotCompleted(f"matdx job in {self['run_dir']}: {status} (see result.json)")
