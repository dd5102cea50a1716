"""``matdx fireworks export``: hand an existing campaign's execution to FireWorks.

The campaign's executor section becomes ``{type: fireworks, launchpad: FILE}``; the jobs it
has ready are added to the LaunchPad at once (one tick), and every later ``matdx tick``
harvests what FireWorks ran and adds the jobs that became ready (see
:mod:`matdx.workflows.executors.fireworks`). The store stays the system of record. A campaign
with jobs running on another executor is refused until they have ended (or been cancelled),
so that no batch is left without the executor that follows it.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from matdx.store.models import Campaign, Job, JobState
from matdx.store.store import Store
from matdx.workflows.campaign import CampaignError
from matdx.workflows.engine import TickReport, tick
from matdx.workflows.executors.spec import validate_executor

__all__ = ["export_campaign"]


def export_campaign(
    store: Store, campaign_id: str, launchpad: str | Path, *, category: str | None = None
) -> TickReport:
    """Move a campaign to the fireworks executor on ``launchpad`` and launch its ready jobs.

    Raises
    ------
    pydantic.ValidationError
        For a LaunchPad file or category the executor section refuses (nothing is changed).
    CampaignError
        When jobs of the campaign are running on another executor.
    """
    section = {"type": "fireworks", "launchpad": str(launchpad)}
    if category is not None:
        section["category"] = category
    spec = validate_executor(section).model_dump(mode="json")
    with store.transaction() as session:
        campaign = session.get(Campaign, campaign_id)
        running = session.scalar(
            select(func.count()).where(
                Job.campaign_id == campaign_id, Job.state == JobState.RUNNING
            )
        )
        if running and campaign.executor.get("type") != "fireworks":
            raise CampaignError(
                f"campaign {campaign.name}: {running} job(s) running on executor "
                f"{campaign.executor.get('type', 'local')!r}; let them end (matdx tick) or "
                "cancel them before exporting it to FireWorks"
            )
        campaign.executor = spec
    return tick(store)
