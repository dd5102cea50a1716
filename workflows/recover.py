"""Recover: decide what follows a failed attempt.

* The error carries a correction from the code's error handlers (``matdx.codes``) and that
  handler has budget left: the correction's ``inputs_update`` is merged into the job's inputs,
  recorded in its ``corrections``, and a new attempt is made.
* An infrastructure failure (walltime, node died): a new attempt, up to ``MAX_REQUEUES``.
* Otherwise: a new attempt while the job has retries left, else FAILED with the last line of
  the error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from matdx.store.models import Attempt, Job, JobState
from matdx.store.store import Store
from matdx.workflows.corrections import deep_merge
from matdx.workflows.rundir import input_hash
from matdx.workflows.states import move

__all__ = ["MAX_REQUEUES", "RecoverReport", "recover"]

MAX_REQUEUES = 5
DEFAULT_HANDLER_BUDGET = 3


@dataclass
class RecoverReport:
    retried: int = 0
    corrected: int = 0
    failed: int = 0


# A correction's resources_update multiplies these job resources: ``cores`` (the MPI ranks a
# program job runs on; fewer after running out of memory), ``memory_mb``, and the expected
# run time ``estimate_s`` with any ``walltime_s`` (longer after a timeout).
RESOURCE_FACTORS = {
    "ranks_factor": ("cores",),
    "memory_factor": ("memory_mb",),
    "walltime_factor": ("estimate_s", "walltime_s"),
}


def scaled_resources(resources: Mapping[str, Any], update: Mapping[str, float]) -> dict[str, Any]:
    """Job resources with a correction's factors applied; ``cores`` stays a whole number ≥ 1
    (and counts as 1 when unset)."""
    scaled = dict(resources)
    if "ranks_factor" in update:
        scaled.setdefault("cores", 1)
    for factor, keys in RESOURCE_FACTORS.items():
        for key in keys:
            if factor in update and key in scaled:
                value = float(scaled[key]) * float(update[factor])
                scaled[key] = max(1, round(value)) if key == "cores" else value
    return scaled


def recover(store: Store) -> RecoverReport:
    report = RecoverReport()
    with store.transaction() as session:
        errored = list(session.scalars(select(Job).where(Job.state == JobState.ERRORED)))
        for job in errored:
            attempt = session.get(Attempt, (job.id, job.attempt))
            error = (attempt.error if attempt else None) or {}
            correction = error.get("correction")
            last_line = error.get("last_line") or job.reason or "failed"
            if correction:
                handler = correction.get("handler", "unnamed handler")
                used = sum(1 for c in job.corrections or [] if c.get("handler") == handler)
                budget = int(correction.get("max_corrections", DEFAULT_HANDLER_BUDGET))
                if used >= budget:
                    report.failed += move(
                        session,
                        [job.id],
                        JobState.ERRORED,
                        JobState.FAILED,
                        reason=f"{handler} used all {budget} of its corrections; {last_line}",
                    )
                    continue
                inputs = deep_merge(
                    job.resolved_inputs or job.inputs, correction.get("inputs_update") or {}
                )
                applied = {
                    "handler": handler,
                    "attempt": job.attempt,
                    "description": correction.get("description", ""),
                    "inputs_update": correction.get("inputs_update", {}),
                    "resources_update": correction.get("resources_update") or {},
                }
                report.corrected += move(
                    session,
                    [job.id],
                    JobState.ERRORED,
                    JobState.READY,
                    resolved_inputs=inputs,
                    input_hash=input_hash(job.function, inputs),
                    corrections=[*(job.corrections or []), applied],
                    resources=scaled_resources(
                        job.resources or {}, correction.get("resources_update") or {}
                    ),
                    reason=f"corrected by {handler}: {applied['description']}",
                )
            elif error.get("kind") == "infrastructure":
                if job.requeues >= MAX_REQUEUES:
                    report.failed += move(
                        session,
                        [job.id],
                        JobState.ERRORED,
                        JobState.FAILED,
                        reason=f"infrastructure failed {job.requeues + 1} times; {last_line}",
                    )
                else:
                    report.retried += move(
                        session,
                        [job.id],
                        JobState.ERRORED,
                        JobState.READY,
                        requeues=job.requeues + 1,
                        reason=last_line,
                    )
            elif job.failures <= job.retries:
                report.retried += move(
                    session,
                    [job.id],
                    JobState.ERRORED,
                    JobState.READY,
                    reason=f"retrying after: {last_line}",
                )
            else:
                report.failed += move(
                    session, [job.id], JobState.ERRORED, JobState.FAILED, reason=last_line
                )
    return report
