"""The Python API: one object per store, with the operations the CLI offers.

Examples
--------
>>> from matdx import Client
>>> client = Client("matdx-data")                      # doctest: +SKIP
>>> campaign = client.submit("examples/eos-metals.yaml")  # doctest: +SKIP
>>> client.run(campaign)                              # doctest: +SKIP
>>> client.results(campaign)                          # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from matdx.store.models import Attempt, Campaign, Job, JobState, Record, Workflow
from matdx.store.queries import Failure, blocked_jobs, failures, find, leaf_results, state_counts
from matdx.store.store import Store
from matdx.workflows.campaign import available_recipes, load_campaign
from matdx.workflows.engine import TickReport, executors_of, tick
from matdx.workflows.executors.base import Executor
from matdx.workflows.submit import CampaignGraph, submit

__all__ = ["CampaignStatus", "Client", "default_home"]


def default_home() -> Path:
    """``$MATDX_HOME``, or ``./matdx-data``."""
    return Path(os.environ.get("MATDX_HOME") or "matdx-data")


@dataclass
class CampaignStatus:
    campaign_id: str
    name: str
    counts: dict[str, int]
    blocked: int
    failures: list[Failure] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def done(self) -> bool:
        """Nothing left that can run: every job is final or waits on a failed/cancelled one."""
        active = sum(
            self.counts.get(s, 0) for s in (JobState.READY, JobState.RUNNING, JobState.ERRORED)
        )
        return active == 0 and self.counts.get(JobState.WAITING, 0) == self.blocked


class Client:
    """Work with one store.

    Parameters
    ----------
    home
        matdx home directory (store, artifacts, run directories); defaults to
        :func:`default_home`.
    url
        Database URL; defaults to ``$MATDX_STORE`` or the SQLite file in ``home``.
    executors
        Executors to use instead of those the campaigns name (e.g. a local executor with a
        given number of workers).
    """

    def __init__(
        self,
        home: str | Path | None = None,
        url: str | None = None,
        executors: Mapping[str, Executor] | None = None,
    ) -> None:
        self.home = Path(home) if home is not None else default_home()
        self.store = Store(self.home, url or os.environ.get("MATDX_STORE") or None)
        self.executors = dict(executors or {})

    # -- campaigns ------------------------------------------------------------------------

    def submit(self, campaign: str | Path | CampaignGraph, *, force: bool = False) -> str:
        """Validate and write a campaign (file or planned graph); returns its id."""
        graph = campaign if isinstance(campaign, CampaignGraph) else load_campaign(campaign)
        return submit(self.store, graph, force=force)

    def tick(self, wait_s: float = 0.0) -> TickReport:
        return tick(self.store, executors=self.executors, wait_s=wait_s)

    def run(
        self,
        campaign: str | None = None,
        *,
        poll_s: float = 0.5,
        timeout_s: float | None = None,
        on_tick: Callable[[TickReport, list[CampaignStatus]], None] | None = None,
    ) -> list[CampaignStatus]:
        """Tick until the campaign (or every campaign) has nothing left to run.

        Raises
        ------
        TimeoutError
            If ``timeout_s`` passes first.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        campaign_id = self.resolve_campaign(campaign) if campaign else None
        while True:
            report = tick(self.store, executors=self.executors, wait_s=60.0)
            statuses = self.status(campaign_id)
            if on_tick is not None:
                on_tick(report, statuses)
            if all(s.done for s in statuses):
                return statuses
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"campaign not done after {timeout_s} s")
            time.sleep(poll_s)

    def status(self, campaign: str | None = None) -> list[CampaignStatus]:
        campaign_id = self.resolve_campaign(campaign) if campaign else None
        with self.store.transaction() as session:
            query = select(Campaign.id, Campaign.name).order_by(Campaign.created_at)
            if campaign_id:
                query = query.where(Campaign.id == campaign_id)
            campaigns = session.execute(query).all()
            counts = state_counts(session, [c for c, _ in campaigns])
            return [
                CampaignStatus(
                    cid,
                    name,
                    counts.get(cid, {}),
                    blocked_jobs(session, cid),
                    failures(session, cid),
                )
                for cid, name in campaigns
            ]

    def results(self, campaign: str) -> list[dict[str, Any]]:
        """Final outputs of each workflow of a campaign (see ``store.queries.leaf_results``)."""
        campaign_id = self.resolve_campaign(campaign)
        with self.store.transaction() as session:
            return leaf_results(session, campaign_id)

    def cancel(self, identifiers: list[str]) -> int:
        from matdx.workflows.control import cancel

        return cancel(
            self.store, self._job_ids(identifiers), executors_of(self.store, self.executors)
        )

    def rerun(self, identifiers: list[str], *, failed_only: bool = False) -> int:
        from matdx.workflows.control import rerun

        job_ids = self._job_ids(identifiers)
        if failed_only:
            with self.store.transaction() as session:
                job_ids = list(
                    session.scalars(
                        select(Job.id).where(Job.id.in_(job_ids), Job.state == JobState.FAILED)
                    )
                )
        return rerun(self.store, job_ids)

    # -- lookups ----------------------------------------------------------------------------

    def resolve(self, identifier: str) -> tuple[str, str]:
        with self.store.transaction() as session:
            return find(session, identifier)

    def resolve_campaign(self, identifier: str) -> str:
        kind, found = self.resolve(identifier)
        if kind != "campaign":
            raise LookupError(f"{identifier!r} is a {kind}, not a campaign")
        return found

    def _job_ids(self, identifiers: list[str]) -> list[str]:
        job_ids: list[str] = []
        with self.store.transaction() as session:
            for identifier in identifiers:
                kind, found = find(session, identifier)
                if kind == "job":
                    job_ids.append(found)
                elif kind == "campaign":
                    job_ids += session.scalars(select(Job.id).where(Job.campaign_id == found))
                else:
                    raise LookupError(f"{identifier!r} is a record; give a job or a campaign")
        return job_ids

    def show(self, identifier: str) -> dict[str, Any]:
        """A job (with its attempts), a record, or a campaign, as plain data."""
        kind, found = self.resolve(identifier)
        with self.store.transaction() as session:
            if kind == "record":
                return {"kind": "record", **session.get(Record, found).document}
            if kind == "campaign":
                row = session.get(Campaign, found)
                return {
                    "kind": "campaign",
                    "id": row.id,
                    "name": row.name,
                    "created_at": row.created_at.isoformat(),
                    "spec": row.spec,
                    "workflows": session.scalar(
                        select(Workflow.id).where(Workflow.campaign_id == found).limit(1)
                    )
                    is not None,
                }
            job = session.get(Job, found)
            attempts = session.scalars(
                select(Attempt).where(Attempt.job_id == found).order_by(Attempt.number)
            ).all()
            return {
                "kind": "job",
                "id": job.id,
                "name": job.name,
                "function": job.function,
                "state": job.state,
                "reason": job.reason,
                "attempt": job.attempt,
                "failures": job.failures,
                "retries": job.retries,
                "requeues": job.requeues,
                "input_hash": job.input_hash,
                "record_id": job.record_id,
                "reused_from": job.reused_from,
                "run_dir": job.run_dir,
                "corrections": job.corrections,
                "attempts": [
                    {
                        "number": a.number,
                        "state": a.state,
                        "run_dir": a.run_dir,
                        "record_id": a.record_id,
                        "reason": a.reason,
                        "host": a.host,
                    }
                    for a in attempts
                ],
            }

    @staticmethod
    def recipes() -> dict[str, Any]:
        return available_recipes()
