"""Access rules on the engine's paths that read other campaigns' results: reuse of identical
results at release, and references added at run time by a ``Response``."""

from __future__ import annotations

from sqlalchemy import func, select

from matdx.store.access import Requester
from matdx.store.models import Job, JobState, Record
from matdx.workflows import Flow
from matdx.workflows.serialization import decode
from matdx.workflows.submit import CampaignGraph
from tests.workflows import jobs

LOCAL = {"type": "local", "workers": 2}


def graph(flow: Flow, owner: str, **governance) -> CampaignGraph:
    return CampaignGraph(f"{owner}-{next(iter(flow.jobs)).name}", [("test", flow)], LOCAL, {},
                         owner=owner, **governance)  # fmt: skip


def run(client, flow: Flow, owner: str, **governance) -> str:
    campaign_id = client.submit(graph(flow, owner, **governance))
    [status] = client.run(campaign_id, poll_s=0.1, timeout_s=90, requester=Requester(owner))
    assert status.done
    return campaign_id


def reused(client, campaign_id: str) -> list[str | None]:
    with client.store.transaction() as session:
        return list(
            session.scalars(select(Job.reused_from).where(Job.campaign_id == campaign_id))
        )


def test_results_are_reused_only_where_the_owner_may_read_them(client):
    run(client, Flow([jobs.add(2, 3)]), "ada")  # private
    run(client, Flow([jobs.add(4, 5)]), "ada", access="public")
    run(client, Flow([jobs.add(6, 7)]), "ada", access="public", project="A",
        export_control=True)  # fmt: skip

    bob_private = run(client, Flow([jobs.add(2, 3)]), "bob")
    assert reused(client, bob_private) == [None]  # ada's private result: run again
    with client.store.transaction() as session:
        owners = session.scalars(
            select(Record.owner).where(Record.campaign_id == bob_private)
        ).all()
    assert owners == ["bob"]  # his own record, not ada's
    assert reused(client, run(client, Flow([jobs.add(4, 5)]), "bob", access="public")) != [None]

    # Export control: not across the boundary, whoever asks (ada herself included) ...
    assert reused(client, run(client, Flow([jobs.add(6, 7)]), "bob")) == [None]
    assert reused(client, run(client, Flow([jobs.add(6, 7)]), "ada", project="A")) == [None]
    # ... but inside it: a controlled campaign of the same project.
    inside = run(client, Flow([jobs.add(6, 7)]), "carol", access="group", project="A",
                 export_control=True)  # fmt: skip
    assert reused(client, inside) != [None]


def test_a_job_added_at_run_time_may_not_read_another_users_private_job(client):
    private = jobs.add(1, 2)
    run(client, Flow([private]), "ada")

    adder = jobs.add_reading(private.id)
    bobs = run(client, Flow([adder]), "bob")
    with client.store.transaction() as session:
        rows = session.execute(select(Job.id, Job.state, Job.reason, Job.inputs).where(
            Job.campaign_id == bobs)).all()  # fmt: skip
        outputs = session.scalars(select(Record.output).where(Record.campaign_id == bobs)).all()
    [(job_id, state, reason, _)] = rows  # nothing was added to bob's campaign
    assert job_id == adder.id and state == JobState.FAILED
    assert "may not read" in reason and private.id in reason
    assert 3 not in [decode(o) for o in outputs] and 4 not in [decode(o) for o in outputs]

    # The same response in ada's own campaign adds the job, which reads her result.
    hers = run(client, Flow([jobs.add_reading(private.id)]), "ada")
    with client.store.transaction() as session:
        states = session.scalars(select(Job.state).where(Job.campaign_id == hers)).all()
        total = session.scalar(select(func.count()).select_from(Job))
    assert sorted(states) == [JobState.COMPLETED] * 2 and total == 4
