"""The job state machine is the one way job states change: illegal moves are refused, and no
module of the engine updates a job's state behind its back."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from sqlalchemy import select

from matdx.store.models import Job, JobState
from matdx.workflows import Flow
from matdx.workflows.states import TRANSITIONS, InvalidTransition, move, move_each
from tests.workflows import jobs
from tests.workflows.test_engine import campaign

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


def test_every_illegal_transition_is_refused_and_changes_nothing(client):
    one = jobs.add(1, 2)
    client.submit(campaign(Flow([one])))
    with client.store.transaction() as session:
        before = session.scalar(select(Job.state).where(Job.id == one.id))
    illegal = [(s, t) for s in JobState for t in JobState if t not in TRANSITIONS[s]]
    assert (JobState.COMPLETED, JobState.RUNNING) in illegal
    for source, target in illegal:
        with client.store.transaction() as session:
            with pytest.raises(InvalidTransition, match=f"from {source} to {target}"):
                move(session, [one.id], source, target)
            with pytest.raises(InvalidTransition):
                move_each(session, [{"id": one.id, "reason": "x"}], [source], target)
    with client.store.transaction() as session:
        assert session.scalar(select(Job.state).where(Job.id == one.id)) == before


def test_a_move_from_a_state_the_job_is_not_in_leaves_it_alone(client):
    one = jobs.add(1, 2)
    client.submit(campaign(Flow([one])))
    with client.store.transaction() as session:
        state = session.scalar(select(Job.state).where(Job.id == one.id))
        other = next(s for s in TRANSITIONS if s != state and JobState.FAILED in TRANSITIONS[s])
        assert move(session, [one.id], other, JobState.FAILED) == 0
        assert session.scalar(select(Job.state).where(Job.id == one.id)) == state


def _writes_job_state(tree: ast.AST) -> list[int]:
    """Lines that update the jobs table or assign a job's ``state`` directly."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            # update(Job) / Job.__table__.update()
            if isinstance(func, ast.Name) and func.id == "update" and any(
                isinstance(a, ast.Name) and a.id == "Job" for a in node.args
            ):
                lines.append(node.lineno)
            if (
                isinstance(func, ast.Attribute)
                and func.attr == "update"
                and isinstance(func.value, ast.Attribute)
                and func.value.attr == "__table__"
                and isinstance(func.value.value, ast.Name)
                and func.value.value.id == "Job"
            ):
                lines.append(node.lineno)
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if (
                    isinstance(target, ast.Attribute)
                    and target.attr == "state"
                    and isinstance(target.value, ast.Name)
                    and target.value.id == "job"
                ):
                    lines.append(node.lineno)
    return lines


def test_no_engine_module_changes_job_states_outside_the_state_machine():
    offenders = {}
    for path in sorted(WORKFLOWS.rglob("*.py")):
        if path.name == "states.py":
            continue
        found = _writes_job_state(ast.parse(path.read_text()))
        if found:
            offenders[str(path.relative_to(WORKFLOWS))] = found
    assert offenders == {}
    # the scan does find such a write
    assert _writes_job_state(ast.parse("session.execute(update(Job), rows)")) == [1]
    assert _writes_job_state(ast.parse("Job.__table__.update().values(state='X')")) == [1]
