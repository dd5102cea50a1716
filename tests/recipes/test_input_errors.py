"""An input error is never retried: a campaign job whose CP2K input is refused fails after its
first attempt, with failure kind ``input`` and CP2K's own message, whatever its ``retries``
(the budgets of ``matdx.workflows.failures``: an uncorrected input failure has no rerun).

Two ways in, both with the real CP2K 2023.1 (Debian): a raw input section CP2K's parser
refuses (``[ABORT]`` from ``input/input_parsing.F``), and parameters matdx refuses before
anything runs (k-points with the OT solver).
"""

from __future__ import annotations

import pytest

from matdx.workflows.campaign import plan_campaign, read_campaign
from tests.codes.helpers import require


@pytest.fixture
def client(tmp_path):
    from matdx.client import Client
    from matdx.workflows.executors.local import LocalExecutor

    made = Client(tmp_path / "home", executors={"local": LocalExecutor(workers=2)})
    yield made
    made.store.dispose()


@pytest.mark.programs
@pytest.mark.slow
def test_cp2k_input_errors_fail_at_the_first_attempt(client):
    require("cp2k")
    silicon = {"code": "cp2k", "protocol": "fast", "structures": [{"bulk": ["Si"]}]}
    refused = {"cutoff": 150, "rel_cutoff": 30,
               "input": {"FORCE_EVAL": {"DFT": {"SCF": {"NO_SUCH_KEYWORD": 3}}}}}
    impossible = {"cutoff": 150, "rel_cutoff": 30, "kpoints": {"grid": [2, 2, 2]}}
    campaign = {"name": "cp2k-input-errors", "retries": 3, "studies": [
        {"recipe": "static", "parameters": refused, **silicon},
        {"recipe": "static", "parameters": impossible, **silicon},
    ]}
    campaign_id = client.submit(plan_campaign(read_campaign(campaign)))
    [status] = client.run(campaign_id, poll_s=0.5, timeout_s=600)
    assert status.counts == {"FAILED": 2}, status
    assert len(status.failures) == 2
    for failure in status.failures:
        assert failure.attempts == 1, failure  # never rerun
        shown = client.show(failure.job_id)
        assert shown["failures"] <= 1
    text = " ".join(f.reason for f in status.failures)
    assert "unknown keyword NO_SUCH_KEYWORD in section SCF" in text, text
    assert "k-points and smearing need scf_method='diagonalization'" in text, text
