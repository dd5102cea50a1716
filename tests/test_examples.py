"""Every campaign file shipped in examples/ (and the demo) is valid."""

from pathlib import Path

import pytest

from matdx.demo import DEMO_CAMPAIGN
from matdx.workflows.campaign import load_campaign

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", [*EXAMPLES, DEMO_CAMPAIGN], ids=lambda p: p.name)
def test_example_campaign_is_valid(path):
    graph = load_campaign(path)
    assert graph.workflows
    assert all(len(flow) > 0 for _, flow in graph.workflows)


def test_there_are_examples():
    assert len(EXAMPLES) >= 3
