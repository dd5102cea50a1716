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

import dataclasses
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from matdx.store.access import Purpose, Requester, access_filter, allowed, discovery_view
from matdx.store.discovery import discovered_record
from matdx.store.models import Attempt, AuditEntry, Campaign, Job, JobState, Record, Workflow
from matdx.store.queries import Failure, blocked_jobs, failures, find, leaf_results, state_counts
from matdx.store.search import Page, RecordQuery, count_records, search_records
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

    def identity(
        self, user: str | None = None, groups: list[str] | None = None, *, admin: bool = False
    ) -> Requester:
        """Who uses the store, as authentication proves it (:mod:`matdx.store.identity`):
        on SQLite the account running matdx (``user`` or ``$MATDX_USER`` may only name it).

        Raises
        ------
        matdx.store.identity.IdentityError
            If ``user`` claims another identity, or ``admin`` is not granted.
        """
        from matdx.store.identity import identify

        return identify(self.store.engine, user, groups, admin=admin)

    # -- campaigns ------------------------------------------------------------------------

    def submit(self, campaign: str | Path | CampaignGraph, *, force: bool = False) -> str:
        """Validate and write a campaign (file or planned graph); returns its id."""
        graph = campaign if isinstance(campaign, CampaignGraph) else load_campaign(campaign)
        if not graph.owner:  # the submitting user, as the store knows them
            graph = dataclasses.replace(graph, owner=self.identity().name)
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
        requester: Requester | None = None,
    ) -> list[CampaignStatus]:
        """Tick until the campaign (or every campaign the requester may see) has nothing
        left to run.

        Raises
        ------
        TimeoutError
            If ``timeout_s`` passes first.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        campaign_id = self.resolve_campaign(campaign) if campaign else None
        while True:
            report = tick(self.store, executors=self.executors, wait_s=60.0)
            statuses = self.status(campaign_id, requester=requester)
            if on_tick is not None:
                on_tick(report, statuses)
            if all(s.done for s in statuses):
                return statuses
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"campaign not done after {timeout_s} s")
            time.sleep(poll_s)

    def status(
        self, campaign: str | None = None, *, requester: Requester | None = None
    ) -> list[CampaignStatus]:
        """Jobs by state of the campaign (or of every campaign) the requester may see."""
        campaign_id = self.resolve_campaign(campaign) if campaign else None
        who = requester or self.identity()
        with self.store.transaction() as session:
            if campaign_id:
                self._check_visible(session, "campaign", campaign_id, who)
            query = (
                select(Campaign.id, Campaign.name)
                .where(access_filter(who, Purpose.READ, table=Campaign))
                .order_by(Campaign.created_at)
            )
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

    def results(
        self, campaign: str, *, requester: Requester | None = None
    ) -> list[dict[str, Any]]:
        """Final outputs of each workflow of a campaign (see ``store.queries.leaf_results``)."""
        campaign_id = self.resolve_campaign(campaign)
        with self.store.transaction() as session:
            self._check_visible(session, "campaign", campaign_id, requester, Purpose.RESULTS)
            return leaf_results(session, campaign_id)

    def cancel(self, identifiers: list[str], *, requester: Requester | None = None) -> int:
        """Cancel jobs (or every job of campaigns) of campaigns the requester manages."""
        from matdx.workflows.control import cancel

        return cancel(
            self.store,
            self._job_ids(identifiers, requester),
            executors_of(self.store, self.executors),
        )

    def rerun(
        self,
        identifiers: list[str],
        *,
        failed_only: bool = False,
        requester: Requester | None = None,
    ) -> int:
        """Fresh attempts for jobs (or every job of campaigns) the requester manages."""
        from matdx.workflows.control import rerun

        job_ids = self._job_ids(identifiers, requester)
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

    def _job_ids(self, identifiers: list[str], requester: Requester | None = None) -> list[str]:
        """The jobs named, or of the campaigns named; PermissionError unless the requester
        manages (owns, or is in the project of) every campaign they belong to."""
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
            campaigns = set(
                session.scalars(select(Job.campaign_id).where(Job.id.in_(job_ids)).distinct())
            )
            who = requester or self.identity()
            refused = campaigns - allowed(session, who, Purpose.MANAGE, campaigns, table=Campaign)
            if refused:
                raise PermissionError(
                    f"{who.name} may not change the jobs of campaign(s) {sorted(refused)}: "
                    "only their owner and their project's members may"
                )
        return job_ids

    def _check_visible(
        self,
        session: Any,
        kind: str,
        found: str,
        requester: Requester | None,
        purpose: Purpose = Purpose.READ,
    ) -> None:
        """Raise LookupError unless the requester may use this record, or this campaign or
        job (judged by its campaign's governance, see ``store.access``), for ``purpose``."""
        who = requester or self.identity()
        if kind == "record":
            visible = allowed(session, who, purpose, [found])
        else:
            campaign_id = found if kind == "campaign" else session.get(Job, found).campaign_id
            visible = allowed(session, who, purpose, [campaign_id], table=Campaign)
        if not visible:
            raise LookupError(f"{kind} {found} is not visible to {who.name}")

    def show(self, identifier: str, *, requester: Requester | None = None) -> dict[str, Any]:
        """A job (with its attempts), a record, or a campaign, as plain data; of a record
        whose results the requester may not read yet (a running embargo), its discovery
        metadata only (:func:`~matdx.store.access.discovery_view`)."""
        kind, found = self.resolve(identifier)
        with self.store.transaction() as session:
            hidden = discovered_record(session, found) if kind == "record" else None
            if hidden is not None:  # PostgreSQL: row-level security hides its results
                return {"kind": "record", **hidden}
            self._check_visible(session, kind, found, requester)
            if kind == "record":
                row = session.get(Record, found)
                who = requester or self.identity()
                if not allowed(session, who, Purpose.RESULTS, [found]):
                    return {"kind": "record", **discovery_view(row.document, row.created_at)}
                return {"kind": "record", **row.document}
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

    # -- records: queries, governance, exports ---------------------------------------------

    def record_query(self, **criteria: Any) -> RecordQuery:
        """A validated :class:`~matdx.store.search.RecordQuery`; ``campaign`` (a name or id,
        or a list of them) is resolved to ``campaign_ids``.

        Raises
        ------
        matdx.store.search.QueryError
            If a criterion is malformed (the message names it).
        """
        campaigns = criteria.pop("campaign", None)
        if campaigns:
            names = [campaigns] if isinstance(campaigns, str) else list(campaigns)
            criteria["campaign_ids"] = [
                *criteria.get("campaign_ids", []),
                *(self.resolve_campaign(name) for name in names),
            ]
        return RecordQuery.parse(**criteria)

    def query(
        self, *, requester: Requester | None = None, documents: bool = False, **criteria: Any
    ) -> Page:
        """One page of the records the requester may read that match the criteria.

        Parameters
        ----------
        requester
            Who asks; defaults to ``$MATDX_USER`` / ``$MATDX_GROUPS``
            (:meth:`Requester.from_environment`).
        documents
            Whole record documents instead of summaries.
        criteria
            Fields of :class:`~matdx.store.search.RecordQuery` (``elements``,
            ``any_elements``, ``only_elements``, ``formula``, ``nsites``, ``calculation``,
            ``code``, ``tags``, ``properties``, ``status``, ``access``, ``owner``, ``limit``,
            ``after``) and ``campaign``.

        Examples
        --------
        >>> page = client.query(elements=["Cu", "O"], properties={"band_gap": {"min": 1}})
        >>> page.items[0]["formula"], page.next_after  # doctest: +SKIP
        """
        query = self.record_query(**criteria)
        who = requester or self.identity()
        with self.store.transaction() as session:
            return search_records(session, query, who, documents=documents)

    def count(self, *, requester: Requester | None = None, **criteria: Any) -> int:
        """How many records the requester may read match the criteria (see :meth:`query`)."""
        query = self.record_query(**criteria)
        with self.store.transaction() as session:
            return count_records(session, query, requester or self.identity())

    def _selection(self, identifiers: list[str]) -> tuple[list[str], list[str]]:
        records, campaigns = [], []
        with self.store.transaction() as session:
            for identifier in identifiers:
                kind, found = find(session, identifier)
                if kind == "record":
                    records.append(found)
                elif kind == "campaign":
                    campaigns.append(found)
                else:
                    raise LookupError(f"{identifier!r} is a job; give records or campaigns")
        return records, campaigns

    def set_access(
        self,
        identifiers: list[str],
        *,
        requester: Requester | None = None,
        reason: str = "",
        **changes: Any,
    ) -> int:
        """Change the governance of records, or of campaigns and all their records, with an
        audit entry each; returns the number of records changed.

        Parameters
        ----------
        identifiers
            Record ids (or prefixes) and campaign names or ids.
        changes
            Fields of :class:`~matdx.store.governance.GovernanceChange`: ``owner``,
            ``project``, ``access``, ``embargo_until``, ``license``, ``export_control``.
        """
        from matdx.store.governance import GovernanceChange, set_governance

        change = GovernanceChange.model_validate(changes)
        records, campaigns = self._selection(identifiers)
        with self.store.transaction() as session:
            return set_governance(
                session,
                requester or self.identity(),
                change,
                record_ids=records,
                campaign_ids=campaigns,
                reason=reason,
            )

    def record(self, record_id: str, *, requester: Requester | None = None) -> Any:
        """A record from the store as a :class:`matdx.stored_record.StoredRecord`: method,
        results, the recipe's typed data (``.eos``, ``.elastic``, ``.phonon``, ``.bands``,
        ``.md``) and its artifacts, without its run directory.

        Raises
        ------
        LookupError
            If there is no such record, or the requester may not read it.
        """
        from matdx.store.records import validate_document
        from matdx.stored_record import StoredRecord

        kind, found = self.resolve(record_id)
        if kind != "record":
            raise LookupError(f"{record_id!r} is a {kind}, not a record")
        with self.store.transaction() as session:
            self._check_visible(session, kind, found, requester)
            document = session.get(Record, found).document
        return StoredRecord(
            validate_document(document, upgrade=True),
            lambda name, target: self.fetch_artifact(found, name, target, requester=requester),
        )

    def fetch_artifact(
        self,
        record: str,
        name: str,
        destination: str | Path,
        *,
        requester: Requester | None = None,
    ) -> Path:
        """Copy an output artifact of a record to ``destination``, if the requester may fetch
        it (an embargoed record's artifacts stay hidden from outsiders until its date).

        Raises
        ------
        PermissionError
            If the requester may not fetch the record's artifacts.
        LookupError
            If the record has no artifact of that name.
        """
        from matdx.store.models import RecordArtifact

        kind, record_id = self.resolve(record)
        if kind != "record":
            raise LookupError(f"{record!r} is a {kind}, not a record")
        who = requester or self.identity()
        with self.store.transaction() as session:
            if not allowed(session, who, Purpose.ARTIFACTS, [record_id]):
                raise PermissionError(f"{who.name} may not fetch the artifacts of {record_id}")
            sha256 = session.scalar(
                select(RecordArtifact.sha256).where(
                    RecordArtifact.record_id == record_id, RecordArtifact.name == name
                )
            )
        if sha256 is None:
            raise LookupError(f"record {record_id} has no artifact named {name!r}")
        return self.store.artifacts.materialize(sha256, destination)

    def history(
        self, identifier: str, *, requester: Requester | None = None
    ) -> list[dict[str, Any]]:
        """The governance changes of a record or campaign, oldest first."""
        kind, found = self.resolve(identifier)
        column = AuditEntry.record_id if kind == "record" else AuditEntry.campaign_id
        with self.store.transaction() as session:
            self._check_visible(session, kind, found, requester)
            entries = session.scalars(
                select(AuditEntry).where(column == found).order_by(AuditEntry.id)
            ).all()
            return [
                {
                    "at": e.at.isoformat(),
                    "actor": e.actor,
                    "action": e.action,
                    "before": e.before,
                    "after": e.after,
                    "reason": e.reason,
                }
                for e in entries
            ]

    def export(
        self,
        fmt: str,
        path: str | Path,
        *,
        requester: Requester | None = None,
        licenses: list[str] | None = None,
        fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
        seed: int = 0,
        overwrite: bool = False,
        **criteria: Any,
    ) -> Any:
        """Export the records the requester may take out of the store.

        An existing file is never overwritten (``FileExistsError``) unless ``overwrite``.

        Parameters
        ----------
        fmt
            ``optimade`` (JSON Lines), ``extxyz`` (a directory of train / validation / test
            files), ``ase`` (ASE database), ``parquet`` or ``archive`` (for ``matdx import``).
        licenses
            Export only records under one of these SPDX expressions.
        fractions, seed
            The train / validation / test split of ``extxyz``.
        criteria
            Selection, as for :meth:`query` (``limit`` and ``after`` do not apply).

        Returns
        -------
        The number of records written (``optimade``, ``ase``, ``parquet``), an
        :class:`~matdx.store.export_extxyz.ExtxyzReport` or an
        :class:`~matdx.store.archive.ArchiveReport`.
        """
        from matdx.store.exporting import claim_export_target, exportable_records

        writers = ("optimade", "extxyz", "ase", "parquet", "archive")
        if fmt not in writers:
            raise ValueError(f"export format: {fmt!r} is not one of {', '.join(writers)}")
        claim_export_target(fmt, path, overwrite=overwrite)
        query = self.record_query(**criteria)
        who = requester or self.identity()
        with self.store.transaction() as session:
            records = exportable_records(
                session, who, query, licenses=licenses, artifacts=fmt in ("extxyz", "archive")
            )
            if fmt == "optimade":
                from matdx.store.export_optimade import write_optimade_jsonl

                return write_optimade_jsonl(records, path)
            if fmt == "ase":
                from matdx.store.export_ase import write_ase_db

                return write_ase_db(records, path)
            if fmt == "parquet":
                from matdx.store.export_parquet import write_parquet

                return write_parquet(records, path)
            if fmt == "archive":
                from matdx.store.archive import write_archive

                return write_archive(records, path, artifacts=self.store.artifacts)
            from matdx.store.export_extxyz import write_extxyz

            return write_extxyz(
                records,
                path,
                artifacts=self.store.artifacts,
                read_frames=h5md_frames,
                fractions=fractions,
                seed=seed,
            )

    def import_archive(self, path: str | Path, *, requester: Requester | None = None) -> Any:
        """Load an archive made by ``export("archive", ...)``, its records owned by the
        requester (the importer) and marked as imported; records already in the store are
        skipped. Returns an :class:`~matdx.store.archive.ImportReport`.

        Raises
        ------
        matdx.store.archive.ArchiveError
            If the archive is altered or corrupt, or collides with campaigns or jobs of the
            store (nothing is imported).
        """
        from matdx.store.archive import import_archive

        who = requester or self.identity()
        with self.store.transaction() as session:
            return import_archive(
                session, path, artifacts=self.store.artifacts, importer=who.user or ""
            )

    def gc(self, *, dry_run: bool = False, grace_s: float | None = None) -> Any:
        """Remove artifact objects no record references (see :mod:`matdx.store.gc`)."""
        from matdx.store.gc import DEFAULT_GRACE_S, collect_garbage

        return collect_garbage(
            self.store, dry_run=dry_run, grace_s=DEFAULT_GRACE_S if grace_s is None else grace_s
        )


def h5md_frames(path: Path) -> Iterator[Any]:
    """The frames of an H5MD trajectory artifact, for the extended-XYZ export (the store
    reads no trajectory format itself; :mod:`matdx.codes.trajectory` owns it)."""
    from matdx.codes.trajectory import TrajectoryReader
    from matdx.store.export_extxyz import Frame

    with TrajectoryReader(path) as reader:
        for block in reader.blocks():
            energies = block.observables.get("potential_energy")
            for i in range(len(block.positions)):
                yield Frame(
                    numbers=reader.numbers,
                    positions=block.positions[i],
                    cell=block.cells[i],
                    pbc=reader.pbc,
                    energy=None if energies is None else float(energies[i]),
                    forces=None if block.forces is None else block.forces[i],
                )
