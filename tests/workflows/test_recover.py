"""Recover: each failure kind spends its own budget (matdx.workflows.failures)."""

from __future__ import annotations

from typing import get_args

import pytest
from sqlalchemy import select

from matdx.codes.errors import KINDS as CODE_KINDS
from matdx.codes.errors import Kind
from matdx.store.models import Attempt, JobState
from matdx.workflows import Flow
from matdx.workflows.failures import BUDGETS, KINDS, FailureKind, kind_of
from tests.workflows import jobs
from tests.workflows.test_engine import campaign, states


def test_codes_and_workflows_name_the_same_five_kinds():
    # codes may not import workflows (nor the reverse): the two lists are kept equal here
    assert KINDS == CODE_KINDS == get_args(Kind) == get_args(FailureKind)
    assert KINDS == ("input", "numerical", "resources", "program", "infrastructure")
    assert set(BUDGETS) == set(KINDS)


def test_unknown_and_legacy_kinds_count_as_program_crashes():
    assert kind_of({"kind": "science"}) == "program"
    assert kind_of({}) == "program" and kind_of(None) == "program"
    assert kind_of({"kind": "numerical"}) == "numerical"


@pytest.mark.parametrize("kind", ["input", "numerical"])
def test_an_uncorrected_input_or_numerical_failure_is_not_rerun(client, kind):
    failing = jobs.always_fails(kind, False)  # the job allows 3 retries; the kind allows none
    cid = client.submit(campaign(Flow([failing])))
    client.run(cid, poll_s=0.1, timeout_s=60)
    assert states(client, cid) == {failing.id: JobState.FAILED}
    shown = client.show(failing.id)
    assert shown["attempt"] == 1 and shown["corrections"] == []
    assert f"{kind} failure without a correction" in shown["reason"]


def test_a_program_crash_is_rerun_while_the_jobs_retries_last(client):
    failing = jobs.always_fails("program", False)
    cid = client.submit(campaign(Flow([failing])))
    client.run(cid, poll_s=0.1, timeout_s=60)
    shown = client.show(failing.id)
    assert shown["state"] == JobState.FAILED and shown["attempt"] == 4  # 1 + 3 retries


@pytest.mark.parametrize("kind", ["input", "numerical", "resources"])
def test_corrections_stop_at_their_kinds_budget_and_are_recorded(client, kind):
    failing = jobs.always_fails(kind, True)
    cid = client.submit(campaign(Flow([failing])))
    client.run(cid, poll_s=0.2, timeout_s=120)
    shown = client.show(failing.id)
    budget = BUDGETS[kind].corrections
    assert shown["state"] == JobState.FAILED and shown["attempt"] == budget + 1
    assert f"{kind} failures used all {budget} corrections" in shown["reason"]
    corrections = shown["corrections"]
    assert [c["kind"] for c in corrections] == [kind] * budget
    first = corrections[0]
    assert first["handler"] == f"{kind}_fixer" and first["errors"] == [f"{kind}_error"]
    assert first["actions"] == [{"dict": "INPUT", "action": {"_set": {"step": 1}}}]
    assert corrections[-1]["inputs_update"] == {"kwargs": {"step": budget}}


def test_a_plain_exception_is_recorded_as_a_program_crash(client):
    """The job runner writes the proper kind, never the old "science"."""
    failing = jobs.fail("no handler explains this")
    cid = client.submit(campaign(Flow([failing])))
    client.run(cid, poll_s=0.1, timeout_s=60)
    assert client.show(failing.id)["state"] == JobState.FAILED
    with client.store.transaction() as session:
        attempts = session.scalars(select(Attempt).where(Attempt.job_id == failing.id)).all()
    assert attempts and {a.error["kind"] for a in attempts} == {"program"}
