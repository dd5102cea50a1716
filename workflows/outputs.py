"""The outputs of completed jobs, as references to them resolve."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from matdx.store.models import Job, JobState, Record
from matdx.workflows.reference import iter_reference_ids, resolve_references
from matdx.workflows.serialization import JSON

__all__ = ["OutputNotReady", "job_outputs"]


class OutputNotReady(LookupError):
    """A referenced job has not completed (or its replacement has not)."""


def job_outputs(session: Session, job_ids: Iterable[str]) -> dict[str, JSON]:
    """Encoded output of each job, following replacements (``Response(replace=...)``).

    Raises
    ------
    OutputNotReady
        If a job (or a job its output was replaced by) is not COMPLETED, or has a response
        still waiting to be expanded.
    """
    ids = set(job_ids)
    if not ids:
        return {}
    rows = session.execute(
        select(Job.id, Job.state, Job.record_id, Job.output_ref, Job.pending_response).where(
            Job.id.in_(ids)
        )
    ).all()
    missing = ids - {row.id for row in rows}
    if missing:
        raise OutputNotReady(f"reference to unknown job(s) {sorted(missing)}")
    outputs: dict[str, JSON] = {}
    replaced = {}
    record_of = {}
    for row in rows:
        if row.state != JobState.COMPLETED or row.pending_response is not None:
            raise OutputNotReady(f"job {row.id} is {row.state}")
        if row.output_ref is not None:
            replaced[row.id] = row.output_ref
        else:
            record_of[row.id] = row.record_id
    if record_of:
        stored = dict(
            session.execute(
                select(Record.record_id, Record.output).where(
                    Record.record_id.in_(set(record_of.values()))
                )
            ).all()
        )
        for job_id, record_id in record_of.items():
            outputs[job_id] = stored.get(record_id)
    for job_id, output_ref in replaced.items():
        inner = job_outputs(session, iter_reference_ids(output_ref))
        outputs[job_id] = resolve_references(output_ref, inner)
    return outputs
