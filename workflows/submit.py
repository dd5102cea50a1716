"""Submit: write a campaign's workflows and jobs to the store in one transaction."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from matdx.store.access import Purpose, Requester, allowed
from matdx.store.models import Campaign, Job, Workflow
from matdx.store.store import Store
from matdx.workflows.disorder import DisorderedStructure, check_ordered
from matdx.workflows.flow import Flow
from matdx.workflows.graph import insert_jobs
from matdx.workflows.reference import iter_reference_ids

__all__ = ["CampaignGraph", "SubmitError", "submit"]


class SubmitError(ValueError):
    """A campaign's graph is inconsistent; nothing was written."""


@dataclass
class CampaignGraph:
    """Everything to write for one campaign.

    Attributes
    ----------
    name
        Campaign name.
    workflows
        One flow per workflow (e.g. per structure and setting), with the recipe it came from.
    executor
        The executor section, e.g. ``{"type": "local", "workers": 2}``.
    spec
        The validated campaign file, kept for provenance.
    """

    name: str
    workflows: Sequence[tuple[str, Flow]]
    executor: Mapping[str, Any]
    spec: Mapping[str, Any]
    tags: Sequence[str] = ()
    owner: str = ""  # empty: the submitting user ($MATDX_USER, else the login name)
    project: str = ""
    access: str = "private"
    license: str | None = None
    embargo_until: datetime | None = None
    export_control: bool = False


def _structures(data: Any, path: str) -> Any:
    """(path, structure) of every ASE ``Atoms`` and pymatgen structure in encoded inputs."""
    if isinstance(data, dict):
        if "@atoms" in data and len(data) == 1:
            from matdx.workflows.serialization import decode

            yield path, decode(data)
        elif str(data.get("@module", "")).startswith("pymatgen") and "sites" in data:
            yield path, data
        else:
            for key, value in data.items():
                yield from _structures(value, f"{path}.{key}")
    elif isinstance(data, list):
        for k, value in enumerate(data):
            yield from _structures(value, f"{path}[{k}]")


def _check_ordered(graph: CampaignGraph) -> None:
    """Every structure a job receives is ordered (jobs built in Python skip the campaign
    file's checks)."""
    for _, flow in graph.workflows:
        for one in flow.jobs:
            for path, structure in _structures(one.inputs, "inputs"):
                try:
                    check_ordered(structure, f"the structure of job {one.name} ({path})")
                except DisorderedStructure as err:
                    raise SubmitError(str(err)) from err


def _check(graph: CampaignGraph, session: Session) -> None:
    """Each job appears once; every reference names a job of the campaign or one already in
    the store (e.g. the MD runs a separate analysis campaign reads)."""
    ids: set[str] = set()
    for _, flow in graph.workflows:
        for one in flow.jobs:
            if one.id in ids:
                raise SubmitError(f"job {one.id} ({one.name}) appears in two workflows")
            ids.add(one.id)
    outside = {ref for _, flow in graph.workflows for one in flow.jobs
               for ref in iter_reference_ids(one.inputs)} - ids
    known: set[str] = set()
    if outside:
        # Outputs of another campaign are read only if its governance lets the submitter see
        # them (store.access), so a private or export-controlled result is never copied in.
        requester = Requester.from_environment(graph.owner)
        found = dict(
            session.execute(select(Job.id, Job.campaign_id).where(Job.id.in_(outside))).all()
        )
        visible = allowed(session, requester, Purpose.RESULTS, found.values(), table=Campaign)
        known = {job_id for job_id, campaign_id in found.items() if campaign_id in visible}
    for _, flow in graph.workflows:
        for one in flow.jobs:
            unknown = set(iter_reference_ids(one.inputs)) - ids - known
            if unknown:
                raise SubmitError(
                    f"job {one.name} ({one.id}) references jobs that are neither in the "
                    f"campaign nor visible to {graph.owner or 'you'} in the store: "
                    f"{sorted(unknown)}"
                )


def submit(store: Store, graph: CampaignGraph, *, force: bool = False) -> str:
    """Write a campaign; returns its id. Jobs start WAITING; the next tick releases them.

    Parameters
    ----------
    force
        Run every job even when a completed job with the same inputs exists.

    Raises
    ------
    SubmitError
        If the graph references jobs that do not exist, repeats a job or hands a job a
        disordered structure; the store is unchanged.
    """
    if not graph.owner:  # like a campaign file: $MATDX_USER, else the login name
        graph = dataclasses.replace(graph, owner=Requester.from_environment().name)
    _check_ordered(graph)
    campaign_id = str(uuid.uuid4())
    with store.transaction() as session:
        _check(graph, session)
        session.add(
            Campaign(
                id=campaign_id,
                name=graph.name,
                spec=dict(graph.spec),
                executor=dict(graph.executor),
                tags=list(graph.tags),
                owner=graph.owner,
                project=graph.project,
                access=graph.access,
                license=graph.license or "",
                embargo_until=graph.embargo_until,
                export_control=graph.export_control,
                force=force,
            )
        )
        session.flush()
        workflow_of: dict[str, str] = {}
        jobs = []
        for recipe, flow in graph.workflows:
            workflow_id = str(uuid.uuid4())
            session.add(
                Workflow(
                    id=workflow_id, campaign_id=campaign_id, name=flow.name or recipe, recipe=recipe
                )
            )
            for one in flow.jobs:
                workflow_of[one.id] = workflow_id
                jobs.append(one)
        session.flush()
        insert_jobs(session, jobs, campaign_id=campaign_id, workflow_id=workflow_of, force=force)
    return campaign_id
