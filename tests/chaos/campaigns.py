"""The small campaign the chaos families run: every kind of step a real campaign has.

Chains and fan-outs (release and launch of WAITING jobs packed with their parents), a job
whose ``Response`` replaces itself (expand), one that adds a job (expand), and one that fails
once before it succeeds (recover).
"""

from __future__ import annotations

from pathlib import Path

from matdx.workflows import Flow
from matdx.workflows.submit import CampaignGraph
from tests.workflows import jobs

#: Jobs the campaign has when it is done (before expansion: 3 × 4 + 1 + 1 + 1).
DONE_JOBS = 3 * 4 + 2 + 2 + 1


def small_campaign(home: Path, name: str = "chaos") -> CampaignGraph:
    flows = []
    for i in range(3):
        first = jobs.sleep(0.2, i)
        middle = [jobs.sleep(0.05, 10 * i + j) for j in range(2)]
        last = jobs.total([first.output, *(m.output for m in middle)])
        flows.append(Flow([first, *middle, last]))
    flows.append(Flow([jobs.grow_until(0, 1)]))
    flows.append(Flow([jobs.with_addition(5)]))
    flows.append(Flow([jobs.fail_until(str(home / "markers"), 2)]))
    return CampaignGraph(name, [("chaos", f) for f in flows], {"type": "local", "workers": 2},
                         {})
