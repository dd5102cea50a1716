"""Access levels, embargoes, export control and governance changes with their audit log."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from matdx.store.access import Purpose, Requester, access_filter, allowed
from matdx.store.exporting import exportable_records
from matdx.store.governance import GovernanceChange, NotOwner, set_governance
from matdx.store.models import AuditEntry, Campaign, Record
from matdx.store.records import RecordSchemaError
from matdx.store.search import RecordQuery, search_records
from tests.conftest import cli_user, matdx_cli
from tests.store.factory import artifact, crystal, document, insert_documents

ADA = Requester("ada", frozenset({"alloys"}))
BOB = Requester("bob")
CARL = Requester("carl", frozenset({"alloys"}))
ANONYMOUS = Requester.anonymous()
ADMIN = Requester("root", admin=True)
LATER = datetime.now(UTC) + timedelta(days=30)


@pytest.fixture
def records(store):
    """ada's records at every access level, with an artifact each."""
    specs = {
        "private": dict(access="private"),
        "group": dict(access="group", project="alloys"),
        "embargoed": dict(access="embargoed", embargo_until=LATER, project="alloys"),
        "public": dict(access="public", license="CC-BY-4.0"),
        "controlled": dict(access="public", export_control=True, project="alloys"),
        "bobs": dict(access="private", owner="bob"),
    }
    ids = {}
    for i, (name, spec) in enumerate(specs.items()):
        reference = artifact(store, f"output of {name}".encode())
        doc = document(crystal("Cu", 3.5 + 0.01 * i), artifacts=[reference], seed=i, **spec)
        ids[name] = insert_documents(store, doc)[0]
    return ids


def visible(store, records, requester, purpose=Purpose.READ, now=None) -> set[str]:
    by_id = {v: k for k, v in records.items()}
    with store.transaction() as session:
        found = session.scalars(
            select(Record.record_id).where(access_filter(requester, purpose, now=now))
        )
        return {by_id[record_id] for record_id in found}


def test_who_reads_what(store, records):
    assert visible(store, records, ADA) == {
        "private", "group", "embargoed", "public", "controlled"
    }  # fmt: skip
    assert visible(store, records, CARL) == {"group", "embargoed", "public", "controlled"}
    assert visible(store, records, BOB) == {"embargoed", "public", "bobs"}
    assert visible(store, records, ANONYMOUS) == {"embargoed", "public"}
    assert visible(store, records, ADMIN) == set(records)


def test_a_private_record_never_reaches_another_user(store, records, tmp_path):
    with store.transaction() as session:
        page = search_records(session, RecordQuery.parse(), BOB)
        exported = [e.record.record_id for e in exportable_records(session, BOB)]
    assert records["private"] not in {item["record_id"] for item in page.items}
    assert records["private"] not in exported
    assert records["bobs"] in exported  # bob's own private record is his to export


def test_embargo_shows_metadata_but_not_artifacts_until_its_date(store, records):
    embargoed = records["embargoed"]
    assert "embargoed" in visible(store, records, BOB)
    assert "embargoed" not in visible(store, records, BOB, Purpose.ARTIFACTS)
    assert "embargoed" in visible(store, records, CARL, Purpose.ARTIFACTS)  # the group's data
    after = LATER + timedelta(seconds=1)
    assert "embargoed" in visible(store, records, BOB, Purpose.ARTIFACTS, now=after)
    with store.transaction() as session:
        assert allowed(session, BOB, Purpose.ARTIFACTS, [embargoed]) == set()
        assert allowed(session, BOB, Purpose.ARTIFACTS, [embargoed], now=after) == {embargoed}
        exported = {e.record.record_id for e in exportable_records(session, BOB)}
        with_artifacts = {
            e.record.record_id for e in exportable_records(session, BOB, artifacts=True)
        }
        later = {
            e.record.record_id for e in exportable_records(session, BOB, artifacts=True, now=after)
        }
        group = {e.record.record_id for e in exportable_records(session, CARL, artifacts=True)}
    # Its results leave the store with no export to outsiders until the date, then they do.
    assert embargoed not in exported and embargoed not in with_artifacts and embargoed in later
    assert embargoed in group


DISCOVERY = {"formula", "elements", "calculation", "owner", "created_at", "embargo_until"}


@pytest.mark.parametrize("reader", [BOB, ANONYMOUS], ids=["bob", "anonymous"])
def test_an_embargo_shows_outsiders_discovery_metadata_only(client, records, reader):
    embargoed = records["embargoed"]
    [item] = [i for i in client.query(requester=reader).items if i["record_id"] == embargoed]
    assert {k for k, v in item.items() if v not in (None, [], {})} == DISCOVERY | {
        "record_id", "access"
    }  # fmt: skip
    assert item["formula"] == "Cu" and item["elements"] == ["Cu"] and item["owner"] == "ada"
    [document] = [d for d in client.query(requester=reader, documents=True).items
                  if d["record_id"] == embargoed]  # fmt: skip
    shown = client.show(embargoed, requester=reader)
    for view in (document, shown):
        assert "results" not in view and "artifacts" not in view and "run" not in view
        assert view["system"] == {"chemical_formula_reduced": "Cu", "elements": ["Cu"],
                                  "nelements": 1}  # fmt: skip
        assert view["method"] == {"calculation": "static"}
        assert view["governance"]["embargo_until"].startswith(LATER.date().isoformat())
        assert view["embargoed"] is True and view["created_at"]
    # Ranges on results do not find it either (the value stays unknown to outsiders).
    ranged = client.query(requester=reader, properties={"energy_per_atom": {"max": 0}})
    assert embargoed not in {i["record_id"] for i in ranged.items}
    assert records["public"] in {i["record_id"] for i in ranged.items}
    # The owner and the project see everything; after the date, so does everyone.
    for insider in (ADA, CARL):
        assert client.show(embargoed, requester=insider)["results"]["energy"] == -1.0
        [full] = [i for i in client.query(requester=insider).items if i["record_id"] == embargoed]
        assert full["energy_per_atom"] == -1.0


def test_status_lists_only_the_campaigns_the_user_may_see(home, client, monkeypatch):
    from matdx.workflows import Flow
    from matdx.workflows.submit import CampaignGraph
    from tests.workflows import jobs

    local = {"type": "local", "workers": 1}
    for owner, access in (("ada", "private"), ("bob", "private"), ("ada", "public")):
        client.submit(CampaignGraph(f"{owner}-{access}", [("t", Flow([jobs.add(1, 2)]))],
                                    local, {}, owner=owner, access=access))  # fmt: skip
    assert [s.name for s in client.status(requester=BOB)] == ["bob-private", "ada-public"]
    assert [s.name for s in client.status(requester=ANONYMOUS)] == ["ada-public"]
    with pytest.raises(LookupError, match="not visible to bob"):
        client.status("ada-private", requester=BOB)
    cli_user(monkeypatch, "bob")  # bob on PostgreSQL; the account running the tests on SQLite
    shown = matdx_cli("status")
    assert shown.returncode == 0, shown.stderr
    assert "ada-public" in shown.stdout and "ada-private" not in shown.stdout


def test_show_takes_an_id_prefix_literally(store, records, client):
    record_id = records["public"]
    assert client.show(record_id[:8], requester=ADA)["record_id"] == record_id
    for pattern in ("%%%%", "____", record_id[:4] + "%", "_" + record_id[1:6]):
        with pytest.raises(LookupError, match="no campaign, job or record matches"):
            client.show(pattern, requester=ADA)
    shown = matdx_cli("show", "%%%%")
    assert shown.returncode == 2 and "no campaign, job or record matches" in shown.stderr


def test_export_controlled_records_never_leave(store, records):
    controlled = records["controlled"]
    for requester in (ADA, CARL, ADMIN, BOB, ANONYMOUS):
        for purpose in (Purpose.EXPORT, Purpose.EXPORT_ARTIFACTS):
            assert "controlled" not in visible(store, records, requester, purpose)
        with store.transaction() as session:
            for artifacts in (False, True):
                exported = exportable_records(session, requester, artifacts=artifacts)
                assert controlled not in {e.record.record_id for e in exported}
    assert "controlled" in visible(store, records, CARL)  # the group still works with it
    assert "controlled" not in visible(store, records, ANONYMOUS)


def test_exports_filter_by_licence(store, records):
    with store.transaction() as session:
        exported = exportable_records(session, ADMIN, licenses=["cc-by-4.0"])
        assert [e.record.record_id for e in exported] == [records["public"]]


def test_owner_changes_access_with_an_audit_entry(store, records):
    with store.transaction() as session:
        changed = set_governance(
            session,
            ADA,
            GovernanceChange(access="public", license="mit"),
            record_ids=[records["private"]],
            reason="paper published",
        )
    assert changed == 1
    assert "private" in visible(store, records, BOB)
    with store.transaction() as session:
        record = session.get(Record, records["private"])
        [entry] = session.scalars(select(AuditEntry)).all()
    assert (record.access, record.license) == ("public", "MIT")
    assert record.document["governance"]["license"] == "MIT"
    assert (entry.actor, entry.record_id, entry.reason) == (
        "ada",
        record.record_id,
        "paper published",
    )
    assert entry.before["access"] == "private" and entry.after["access"] == "public"


def test_governance_changes_are_checked_before_anything_is_written(store, records):
    before = visible(store, records, BOB)
    public, embargoed = GovernanceChange(access="public"), GovernanceChange(access="embargoed")
    with (
        pytest.raises(NotOwner, match="bob may only change records they own"),
        store.transaction() as session,
    ):
        set_governance(session, BOB, public, record_ids=[records["bobs"], records["private"]])
    with (
        pytest.raises(RecordSchemaError, match="needs embargo_until"),
        store.transaction() as session,
    ):
        set_governance(session, ADA, embargoed, record_ids=[records["group"]])
    with pytest.raises(ValueError, match="Input should be 'private'"):
        GovernanceChange(access="secret")
    assert visible(store, records, BOB) == before
    with store.transaction() as session:
        assert session.scalar(select(func.count()).select_from(AuditEntry)) == 0


def test_a_campaign_change_sets_its_defaults_and_its_records(store):
    with store.transaction() as session:
        session.add(
            Campaign(
                id="c2222222-2222-2222-2222-222222222222",
                name="alloys-2026",
                spec={},
                executor={},
                owner="ada",
                project="alloys",
            )
        )
    ids = insert_documents(
        store,
        *(document(seed=i, campaign_id="c2222222-2222-2222-2222-222222222222") for i in range(3)),
    )
    with store.transaction() as session:
        changed = set_governance(
            session,
            ADA,
            GovernanceChange(access="embargoed", embargo_until=LATER, export_control=True),
            campaign_ids=["c2222222-2222-2222-2222-222222222222"],
        )
    assert changed == 3
    with store.transaction() as session:
        campaign = session.get(Campaign, "c2222222-2222-2222-2222-222222222222")
        rows = session.scalars(select(Record).where(Record.record_id.in_(ids))).all()
        entries = session.scalars(select(AuditEntry.action)).all()
    assert campaign.access == "embargoed" and campaign.export_control
    assert all(r.access == "embargoed" and r.export_control for r in rows)
    assert sorted(entries) == ["set-campaign-governance"] + ["set-governance"] * 3


def test_set_access_on_the_command_line(home, store, records, monkeypatch):
    me = cli_user(monkeypatch, "ada")  # the account running the tests, on SQLite
    [mine] = insert_documents(store, document(owner=me, seed=7))
    record = mine[:10]
    bad = matdx_cli("records", "set-access", record, "--access", "secret")
    assert bad.returncode == 2 and bad.stderr.startswith("error:")
    assert "'private', 'group', 'embargoed' or 'public'" in bad.stderr
    bad = matdx_cli("records", "set-access", record, "--license", "Foo-1.0")
    assert bad.returncode == 2 and "unknown SPDX identifier" in bad.stderr
    foreign = matdx_cli("records", "set-access", records["bobs"][:10], "--access", "public")
    assert foreign.returncode == 2 and "may only change records they own" in foreign.stderr
    with store.transaction() as session:
        assert session.scalar(select(func.count()).select_from(AuditEntry)) == 0

    done = matdx_cli(
        "records", "set-access", record, "--access", "embargoed", "--embargo-until",
        "2031-01-01", "--license", "CC-BY-4.0", "--reason", "under review",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "1 record(s) changed" in done.stdout
    history = matdx_cli("records", "history", record)
    assert "private → embargoed" in history.stdout and "under review" in history.stdout
    seen = matdx_cli("query", "--user", "bob", "--format", "json")
    if store.backend == "sqlite":  # one account's store: no other name can be claimed
        assert seen.returncode == 2 and "cannot claim another identity" in seen.stderr
        assert "PostgreSQL" in seen.stderr
    else:
        assert mine in {r["record_id"] for r in json.loads(seen.stdout)["records"]}


def test_embargoed_artifacts_cannot_be_fetched_until_the_date(client, records, tmp_path):
    embargoed = records["embargoed"]
    with pytest.raises(PermissionError, match="bob may not fetch"):
        client.fetch_artifact(embargoed, "out.txt", tmp_path / "x", requester=BOB)
    fetched = client.fetch_artifact(embargoed, "out.txt", tmp_path / "y", requester=CARL)
    assert fetched.read_bytes() == b"output of embargoed"
    assert client.show(embargoed)["governance"]["access"] == "embargoed"  # metadata visible


def test_show_results_and_history_follow_the_access_rules(client, records, tmp_path, monkeypatch):
    with pytest.raises(LookupError, match="not visible to bob"):
        client.show(records["private"], requester=BOB)
    with pytest.raises(LookupError, match="not visible to bob"):
        client.history(records["private"], requester=BOB)
    assert client.show(records["public"], requester=BOB)["record_id"] == records["public"]

    campaign = tmp_path / "c.yaml"  # ada's private campaign: its jobs and outputs
    campaign.write_text("name: adas\nowner: ada\nrecipe: static\nstructures: [{bulk: [Cu]}]\n")
    client.submit(campaign)
    assert client.show("adas", requester=ADA)["name"] == "adas"
    for look in (client.show, client.results):
        with pytest.raises(LookupError, match=r"campaign .* not visible to bob"):
            look("adas", requester=BOB)

    # Only the owner and the project's members cancel or rerun a campaign's jobs.
    with pytest.raises(PermissionError, match="bob may not change the jobs"):
        client.cancel(["adas"], requester=BOB)
    with pytest.raises(PermissionError, match="bob may not change the jobs"):
        client.rerun(["adas"], requester=BOB)
    assert client.cancel(["adas"], requester=ADA) == 1
