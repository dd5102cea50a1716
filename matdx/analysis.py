"""``matdx analyze``: map the trajectory kernels over every stored trajectory of a campaign.

Each completed job of the campaign whose output holds an H5MD ``trajectory`` gets one
:func:`matdx.recipes.analysis.analyze` job that references it. The jobs form a new campaign
(``<campaign>-analysis``) run on a Dask cluster (a local cluster by default, or an existing
scheduler), and their results are records like any other: one per analysis, linked by
provenance to the record of the trajectory it read. A trajectory already analysed with the same
kernels and options is skipped, so running the command again computes nothing new.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from matdx.codes.trajectory import MEDIA_TYPE
from matdx.recipes.analysis import KERNELS, analyze
from matdx.store.access import Purpose, Requester, allowed
from matdx.store.models import Campaign, Job, JobState, Record
from matdx.store.store import Store
from matdx.workflows import Flow, OutputReference
from matdx.workflows.outputs import job_outputs
from matdx.workflows.reference import resolve_references
from matdx.workflows.rundir import input_hash
from matdx.workflows.submit import CampaignGraph

__all__ = ["AnalysisPlan", "plan_analysis"]


@dataclass
class AnalysisPlan:
    """What ``matdx analyze`` will run.

    Attributes
    ----------
    graph
        The analysis campaign, or None when every trajectory was already analysed.
    trajectories
        Trajectories found in the campaign.
    already_done
        Of those, the ones analysed before with the same kernels and options.
    """

    graph: CampaignGraph | None
    trajectories: int
    already_done: int


def _trajectory_jobs(store: Store, campaign_id: str) -> list[tuple[str, str, Any]]:
    """(job id, workflow name, encoded output) of completed jobs that produced trajectories."""
    with store.transaction() as session:
        rows = session.execute(
            select(Job.id, Job.name, Record.output)
            .join(Record, Record.record_id == Job.record_id)
            .where(Job.campaign_id == campaign_id, Job.state == JobState.COMPLETED)
            .order_by(Job.position)
        ).all()
    found = []
    for job_id, name, output in rows:
        trajectory = output.get("trajectory") if isinstance(output, dict) else None
        if isinstance(trajectory, dict) and \
                trajectory.get("@artifact", {}).get("media_type") == MEDIA_TYPE:
            found.append((job_id, name, output))
    return found


def plan_analysis(store: Store, campaign_id: str, campaign_name: str, kernels: Sequence[str],
                  executor: dict[str, Any], *, equilibration_fraction: float | None = None,
                  r_max: float = 6.0, bins: int = 150,
                  requester: Requester | None = None) -> AnalysisPlan:
    """One analysis job per trajectory of a campaign that has not been analysed yet.

    The analysis campaign takes the source campaign's owner and governance.

    Raises
    ------
    ValueError
        For an unknown kernel name.
    LookupError
        If ``requester`` (default: from the environment) may not read the trajectories.
    """
    unknown = sorted(set(kernels) - set(KERNELS))
    if unknown:
        raise ValueError(f"--kernel: unknown {unknown}; accepted: {', '.join(KERNELS)}")
    who = requester or Requester.from_environment()
    with store.transaction() as session:
        if not allowed(session, who, Purpose.ARTIFACTS, [campaign_id], table=Campaign):
            raise LookupError(f"the trajectories of {campaign_name} are not visible to {who.name}")
        source = session.get(Campaign, campaign_id)
        # Derived records belong to whoever owns the trajectories and share their governance
        # (an analysis of export-controlled runs is export-controlled too).
        governance = {
            "owner": source.owner, "project": source.project, "access": source.access,
            "license": source.license or None, "embargo_until": source.embargo_until,
            "export_control": source.export_control, "tags": list(source.tags or []),
        }
    jobs, done = [], 0
    trajectories = _trajectory_jobs(store, campaign_id)
    with store.transaction() as session:
        for job_id, _, output in trajectories:
            temperature = (output.get("md") or {}).get("temperature_K")
            # the analysis record inherits the run's method, thermostat and structure
            source = {key: OutputReference(job_id)[key] for key in ("method", "md", "structure")
                      if output.get(key) is not None}
            step = analyze(OutputReference(job_id)["trajectory"], temperature,
                           equilibration_fraction, r_max, bins, list(kernels), **source)
            resolved = resolve_references(step.inputs, job_outputs(session, [job_id]))
            digest = input_hash(step.function, resolved)
            exists = session.scalar(select(Job.id).where(
                Job.input_hash == digest, Job.state == JobState.COMPLETED).limit(1))
            if exists:
                done += 1
            else:
                jobs.append(step)
    graph = None
    if jobs:
        graph = CampaignGraph(
            name=f"{campaign_name}-analysis",
            workflows=[("analysis", Flow(jobs, name=f"analysis {'+'.join(kernels)}"))],
            executor=executor,
            spec={"analysis_of": campaign_id, "kernels": list(kernels),
                  "equilibration_fraction": equilibration_fraction, "r_max": r_max,
                  "bins": bins},
            **governance,
        )
    return AnalysisPlan(graph, len(trajectories), done)
