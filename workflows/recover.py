"""Recover: decide what follows a failed attempt.

* The error carries a correction from the code's error handlers (``matdx.codes``) and that
  handler has budget left: the correction's ``inputs_update`` is merged into the job's inputs,
  recorded in its ``corrections``, and a new attempt is made.
* Every error has a failure kind (input, numerical, resources, program, infrastructure); each
  kind's budget is defined once, in :mod:`matdx.workflows.failures`.
* An uncorrected failure is rerun unchanged only while its kind's rerun budget lasts, else
  FAILED with the last line of the error.

Each applied correction is recorded in the job's ``corrections`` with its handler, kind, the
errors the handler found and its declarative actions, so the next attempt's record names them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from matdx.store.models import Attempt, Job, JobState
from matdx.store.store import Store
from matdx.workflows.corrections import deep_merge
from matdx.workflows.failures import BUDGETS, kind_of
from matdx.workflows.rundir import input_hash
from matdx.workflows.states import move

__all__ = ["MAX_REQUEUES", "RecoverReport", "recover"]

MAX_REQUEUES = BUDGETS["infrastructure"].reruns
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


def _fail(session: Any, job: Job, reason: str) -> int:
    return move(session, [job.id], JobState.ERRORED, JobState.FAILED, reason=reason)


def _correct(session: Any, job: Job, kind: str, correction: Mapping[str, Any],
             last_line: str) -> tuple[int, int]:
    """Apply ``correction`` to the job's next attempt, or fail it when a budget is spent.

    Returns (corrected, failed) counts."""
    handler = correction.get("handler", "unnamed handler")
    previous = job.corrections or []
    used = sum(1 for c in previous if c.get("handler") == handler)
    budget = int(correction.get("max_corrections", DEFAULT_HANDLER_BUDGET))
    if used >= budget:
        return 0, _fail(session, job,
                        f"{handler} used all {budget} of its corrections; {last_line}")
    of_kind = sum(1 for c in previous if c.get("kind") == kind)
    if of_kind >= BUDGETS[kind].corrections:
        return 0, _fail(session, job, f"{kind} failures used all {BUDGETS[kind].corrections} "
                                      f"corrections of their budget; {last_line}")
    inputs = deep_merge(job.resolved_inputs or job.inputs, correction.get("inputs_update") or {})
    applied = {
        "handler": handler,
        "kind": kind,
        "errors": list(correction.get("errors") or []),
        "actions": list(correction.get("actions") or []),
        "attempt": job.attempt,
        "description": correction.get("description", ""),
        "inputs_update": correction.get("inputs_update", {}),
        "resources_update": correction.get("resources_update") or {},
    }
    corrected = move(
        session,
        [job.id],
        JobState.ERRORED,
        JobState.READY,
        resolved_inputs=inputs,
        input_hash=input_hash(job.function, inputs),
        corrections=[*previous, applied],
        resources=scaled_resources(job.resources or {}, correction.get("resources_update") or {}),
        reason=f"corrected by {handler} ({kind}): {applied['description']}",
    )
    return corrected, 0


def recover(store: Store) -> RecoverReport:
    """Move every ERRORED job to its next attempt (corrected or unchanged) or to FAILED.

    The error's failure kind (:func:`matdx.workflows.failures.kind_of`) selects the budget of
    :data:`matdx.workflows.failures.BUDGETS`: a correction is applied while its handler and its
    kind have budget left; a failure without a correction is rerun unchanged only while its
    kind allows reruns (``infrastructure``: the job's requeues; ``program``: the job's own
    retries; ``input`` and ``numerical``: never, the same inputs would fail the same way).
    """
    report = RecoverReport()
    with store.transaction() as session:
        errored = list(session.scalars(select(Job).where(Job.state == JobState.ERRORED)))
        for job in errored:
            attempt = session.get(Attempt, (job.id, job.attempt))
            error = (attempt.error if attempt else None) or {}
            kind = kind_of(error)
            correction = error.get("correction")
            last_line = error.get("last_line") or job.reason or "failed"
            if correction:
                corrected, failed = _correct(session, job, kind, correction, last_line)
                report.corrected += corrected
                report.failed += failed
            elif kind == "infrastructure":
                reruns = BUDGETS[kind].reruns or 0
                if job.requeues >= reruns:
                    report.failed += _fail(
                        session, job, f"infrastructure failed {job.requeues + 1} times; {last_line}"
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
            else:
                reruns = BUDGETS[kind].reruns
                allowed = job.retries if reruns is None else min(reruns, job.retries)
                if job.failures <= allowed:
                    report.retried += move(
                        session,
                        [job.id],
                        JobState.ERRORED,
                        JobState.READY,
                        reason=f"retrying after a {kind} failure: {last_line}",
                    )
                elif kind == "program":  # out of the job's own retries: the error says it all
                    report.failed += _fail(session, job, last_line)
                else:
                    report.failed += _fail(
                        session, job,
                        f"{kind} failure without a correction (no rerun left of its budget); "
                        f"{last_line}",
                    )
    return report
