"""Release: WAITING jobs whose parents completed get their inputs resolved and become READY,
or COMPLETED at once when a completed job with the same input hash can be reused."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, aliased

from matdx.store.access import Purpose, Requester, access_filter
from matdx.store.models import Campaign, Job, JobEdge, JobState, Record, RecordArtifact
from matdx.store.store import Store
from matdx.workflows.corrections import apply_corrections
from matdx.workflows.outputs import OutputNotReady, job_outputs
from matdx.workflows.reference import ReferenceError, iter_reference_ids, resolve_references
from matdx.workflows.rundir import input_hash
from matdx.workflows.states import move, move_each

__all__ = ["ReleaseReport", "release"]

CHUNK = 2000


@dataclass
class ReleaseReport:
    released: int = 0
    reused: int = 0
    failed: int = 0


def _releasable(session: Session, limit: int) -> list[Job]:
    parent = aliased(Job)
    blocked = (
        select(JobEdge.child_id)
        .join(parent, parent.id == JobEdge.parent_id)
        .where(or_(parent.state != JobState.COMPLETED, parent.pending_response.is_not(None)))
    )
    return list(
        session.scalars(
            select(Job)
            .where(Job.state == JobState.WAITING, Job.id.not_in(blocked))
            .order_by(Job.position)
            .limit(limit)
        )
    )


def _reuser(campaign: Campaign) -> Requester:
    """Whose eyes a campaign's jobs reuse results with: its owner, in its project."""
    return Requester(campaign.owner or None, frozenset({campaign.project}))


def _reusable(
    session: Session, store: Store, hashes: set[str], campaign: Campaign
) -> dict[str, Job]:
    """For each input hash, a COMPLETED job whose result (and its artifacts) can be reused
    by a job of ``campaign``: only a result whose record the campaign's owner may read in
    full (``store.access``), and a result under export control only by a campaign under
    export control itself (the owner's project's, as the access filter requires)."""
    if not hashes:
        return {}
    readable = access_filter(_reuser(campaign), Purpose.RESULTS)
    boundary = [] if campaign.export_control else [Record.export_control.is_(False)]
    done = list(
        session.scalars(
            select(Job)
            .join(Record, Record.record_id == Job.record_id)
            .where(
                Job.input_hash.in_(hashes),
                Job.state == JobState.COMPLETED,
                Job.pending_response.is_(None),
                Job.record_id.is_not(None),
                readable,
                *boundary,
            )
            .order_by(Job.position)
        )
    )
    artifacts: dict[str, list[str]] = {}
    for record_id, sha256 in session.execute(
        select(RecordArtifact.record_id, RecordArtifact.sha256).where(
            RecordArtifact.record_id.in_({j.record_id for j in done}),
            RecordArtifact.role == "output",
        )
    ):
        artifacts.setdefault(record_id, []).append(sha256)
    found: dict[str, Job] = {}
    for candidate in done:
        if candidate.input_hash in found:
            continue
        if not all(store.artifacts.exists(s) for s in artifacts.get(candidate.record_id, [])):
            continue
        if candidate.output_ref is not None:
            try:
                job_outputs(session, [candidate.id])
            except OutputNotReady:
                continue
        found[candidate.input_hash] = candidate
    return found


def _release_chunk(session: Session, store: Store, report: ReleaseReport) -> bool:
    """Release up to CHUNK jobs; True if another pass may find more."""
    jobs = _releasable(session, CHUNK)
    parents = {job.id: set(iter_reference_ids(job.inputs)) for job in jobs}
    try:
        outputs = job_outputs(session, set().union(*parents.values()))
    except OutputNotReady:
        outputs = None  # some replacement is unfinished: fall back to one job at a time

    resolved = {}
    for job in jobs:
        if not parents[job.id]:
            resolved[job.id] = (
                apply_corrections(job.inputs, job.corrections or []) if job.corrections else None
            )
            continue
        try:
            mine = outputs if outputs is not None else job_outputs(session, parents[job.id])
            resolved[job.id] = apply_corrections(
                resolve_references(job.inputs, mine), job.corrections or []
            )
        except OutputNotReady:
            continue  # stays WAITING until the replacement completes
        except ReferenceError as err:
            report.failed += move(
                session, [job.id], JobState.WAITING, JobState.FAILED, reason=f"inputs: {err}"
            )

    hashes = {
        job_id: input_hash(job.function, resolved[job_id] or job.inputs)
        for job in jobs
        if (job_id := job.id) in resolved
    }
    reusable: dict[str, dict[str, Job]] = {}
    for campaign_id in {job.campaign_id for job in jobs}:
        wanted = {
            h for job in jobs if job.campaign_id == campaign_id and not job.force
            for h in [hashes.get(job.id)] if h
        }  # fmt: skip
        reusable[campaign_id] = _reusable(
            session, store, wanted, session.get(Campaign, campaign_id)
        )
    reused_rows, released_rows = [], []
    for job in jobs:
        if job.id not in hashes:
            continue
        digest = hashes[job.id]
        source = None if job.force else reusable[job.campaign_id].get(digest)
        if source is not None and source.id != job.id:
            origin = source.reused_from or source.id
            reused_rows.append(
                {
                    "id": job.id,
                    "input_hash": digest,
                    "resolved_inputs": resolved[job.id],
                    "record_id": source.record_id,
                    "reused_from": origin,
                    "output_ref": source.output_ref,
                    "reason": f"reused the result of job {origin}",
                }
            )
        else:
            released_rows.append(
                {"id": job.id, "input_hash": digest, "resolved_inputs": resolved[job.id]}
            )
    reused = move_each(session, reused_rows, JobState.WAITING, JobState.COMPLETED)
    report.released += move_each(session, released_rows, JobState.WAITING, JobState.READY)
    progressed = len(reused_rows) + len(released_rows)
    report.reused += reused
    # Reused jobs count as completed parents: their children may be releasable now.
    return reused > 0 or (len(jobs) == CHUNK and progressed > 0)


def release(store: Store) -> ReleaseReport:
    """Release every job that can be released now, following chains of reused results."""
    report = ReleaseReport()
    more = True
    while more:
        with store.transaction() as session:
            more = _release_chunk(session, store, report)
    return report
