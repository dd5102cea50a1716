"""The job state machine: which moves are allowed, done as compare-and-set updates."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import bindparam, or_, update
from sqlalchemy.orm import Session

from matdx.store.models import Job, JobState, utcnow

__all__ = ["ACTIVE_STATES", "FINAL_STATES", "TRANSITIONS", "InvalidTransition", "move", "move_each"]

W, R, RUN, E, C, F, X = (
    JobState.WAITING,
    JobState.READY,
    JobState.RUNNING,
    JobState.ERRORED,
    JobState.COMPLETED,
    JobState.FAILED,
    JobState.CANCELLED,
)

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    # released; packed into a batch with its parents; reused a result; inputs unresolvable;
    # cancelled
    W: frozenset({R, RUN, C, F, X}),
    R: frozenset({RUN, C, F, X}),  # launched; reused; no batch could ever run it; cancelled
    # harvested; failed; lost (requeued); lost too often; cancelled
    RUN: frozenset({C, E, R, W, F, X}),
    E: frozenset({R, F, X}),  # retried or corrected; out of retries; cancelled
    C: frozenset({W, F}),  # rerun; the graph change it returned is invalid
    F: frozenset({W}),  # rerun
    X: frozenset({W}),  # rerun
}
FINAL_STATES = frozenset({C, F, X})
ACTIVE_STATES = frozenset({R, RUN, E})


class InvalidTransition(ValueError):
    """A state change the state machine does not allow."""


def _sources(source: JobState | Iterable[JobState], target: JobState) -> set[JobState]:
    sources = {JobState(source)} if isinstance(source, str) else {JobState(s) for s in source}
    for state in sources:
        if target not in TRANSITIONS[state]:
            raise InvalidTransition(f"a job cannot go from {state} to {target}")
    return sources


def move(
    session: Session,
    job_ids: Iterable[str],
    source: JobState | Iterable[JobState],
    target: JobState,
    **values: Any,
) -> int:
    """Move jobs from ``source`` state(s) to ``target``, setting ``values`` too.

    Compare-and-set: a job whose state is no longer in ``source`` is left alone, so a move
    never overrides a concurrent one. Returns how many jobs moved.

    Job objects already loaded in ``session`` are not updated (synchronising them costs
    O(loaded objects) per call); read jobs again after moving them.
    """
    sources = _sources(source, target)
    ids = list(job_ids)
    moved = 0
    for start in range(0, len(ids), 500):  # stay below SQLite's bound-parameter limit
        chunk = ids[start : start + 500]
        result = session.execute(
            update(Job)
            .where(Job.id.in_(chunk), Job.state.in_([s.value for s in sources]))
            .values(state=target.value, updated_at=utcnow(), **values)
            .execution_options(synchronize_session=False)
        )
        moved += result.rowcount
    return moved


def move_each(
    session: Session,
    rows: Sequence[Mapping[str, Any]],
    source: JobState | Iterable[JobState],
    target: JobState,
) -> int:
    """:func:`move` with values per job, in one statement executed for many rows.

    ``rows`` are ``{"id": job_id, column: value, ...}``, all with the same columns. Returns
    the number of rows given (executemany reports no reliable row count).
    """
    sources = _sources(source, target)
    if not rows:
        return 0
    table = Job.__table__
    columns = [key for key in rows[0] if key != "id"]
    statement = (
        table.update()
        # (an IN list would be an "expanding" parameter, which executemany cannot take)
        .where(table.c.id == bindparam("_id"), or_(*(table.c.state == s.value for s in sources)))
        .values(
            state=target.value,
            updated_at=utcnow(),
            **{column: bindparam(f"_{column}") for column in columns},
        )
    )
    session.execute(
        statement, [{"_id": row["id"], **{f"_{c}": row[c] for c in columns}} for row in rows]
    )
    return len(rows)
