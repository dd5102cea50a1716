"""Archives are not trusted: imports are stamped with the importer and marked as imported,
and an archive whose records would join or collide with the store's campaigns or jobs is
refused whole, so the store keeps ticking (on SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import uuid

import pytest
from sqlalchemy import func, select

from matdx.store.access import Requester
from matdx.store.archive import ArchiveError
from matdx.store.models import AuditEntry, Job, Record
from matdx.workflows import Flow
from matdx.workflows.submit import CampaignGraph
from tests.workflows import jobs

ADA, BOB = Requester("ada"), Requester("bob")
LOCAL = {"type": "local", "workers": 2}


def run(client, flow: Flow, owner: str) -> str:
    graph = CampaignGraph(owner, [("test", flow)], LOCAL, {}, owner=owner)
    campaign_id = client.submit(graph)
    [status] = client.run(campaign_id, poll_s=0.1, timeout_s=90, requester=Requester(owner))
    assert status.done
    return campaign_id


def forge(archive, out, edit) -> None:
    """Rewrite every record of an archive with ``edit(record)`` and fix the manifest's
    checksum, as anyone holding the archive can."""
    with tarfile.open(archive) as old:
        members = {m.name: old.extractfile(m).read() for m in old.getmembers()}
    name = next(n for n in members if n.endswith("records.jsonl"))
    entries = [json.loads(line) for line in members[name].splitlines()]
    for entry in entries:
        edit(entry["record"])
    data = b"".join(json.dumps(e, separators=(",", ":")).encode() + b"\n" for e in entries)
    members[name] = data
    manifest = next(n for n in members if n.endswith("manifest.json"))
    header = json.loads(members[manifest])
    header["records_sha256"] = hashlib.sha256(data).hexdigest()
    members[manifest] = json.dumps(header).encode()
    with tarfile.open(out, "w") as new:
        for member, content in members.items():
            info = tarfile.TarInfo(member)
            info.size = len(content)
            new.addfile(info, io.BytesIO(content))


def count(client, table) -> int:
    with client.store.transaction() as session:
        return session.scalar(select(func.count()).select_from(table))


@pytest.fixture
def exported(client, tmp_path):
    """ada's campaign (two jobs) and an archive of its records."""
    a = jobs.add(2, 3)
    campaign_id = run(client, Flow([a, jobs.add(a.output, 1)]), "ada")
    client.export("archive", tmp_path / "ada.tar", requester=ADA)
    return campaign_id


def test_an_import_is_owned_by_the_importer_and_marked(client, exported, tmp_path):
    def elsewhere(record):  # a fresh campaign and fresh jobs: only the owner claims ada
        record["record_id"], record["job_id"] = str(uuid.uuid4()), str(uuid.uuid4())
        record["campaign_id"] = "c0ffee00-0000-0000-0000-000000000000"

    forge(tmp_path / "ada.tar", tmp_path / "claims-ada.tar", elsewhere)
    report = client.import_archive(tmp_path / "claims-ada.tar", requester=BOB)
    assert report.records_added == 2
    with client.store.transaction() as session:
        owners = session.scalars(
            select(Record.owner).where(Record.campaign_id.startswith("c0ffee00"))
        ).all()
        marks = session.scalars(select(AuditEntry).where(AuditEntry.action == "import")).all()
    assert owners == ["bob", "bob"]
    found = {(m.actor, m.before["owner"], m.after["owner"]) for m in marks}
    assert found == {("bob", "ada", "bob")}
    assert all("claims-ada.tar" in m.reason for m in marks)
    again = client.import_archive(tmp_path / "claims-ada.tar", requester=BOB)
    assert (again.records_added, again.records_present) == (0, 2)


@pytest.mark.parametrize(
    ("what", "edit", "message"),
    [
        ("campaign", lambda r: r.update(record_id=str(uuid.uuid4()), job_id=str(uuid.uuid4())),
         r"campaign\(s\) of this store"),
        ("job", lambda r: r.update(record_id=str(uuid.uuid4()), campaign_id=str(uuid.uuid4())),
         r"job id\(s\) of this store"),
    ],
)  # fmt: skip
def test_colliding_imports_are_refused_and_the_store_keeps_ticking(
    client, exported, tmp_path, what, edit, message
):
    forge(tmp_path / "ada.tar", tmp_path / f"{what}.tar", edit)
    records, audit = count(client, Record), count(client, AuditEntry)
    with pytest.raises(ArchiveError, match=rf"import refused: .*{message}.*nothing was imported"):
        client.import_archive(tmp_path / f"{what}.tar", requester=BOB)
    assert (count(client, Record), count(client, AuditEntry)) == (records, audit)

    # A live job's id in an archive must not stop its harvest: the store still ticks.
    waiting = jobs.add(40, 2)
    campaign_id = client.submit(CampaignGraph("later", [("test", Flow([waiting]))], LOCAL, {},
                                              owner="ada"))  # fmt: skip
    with client.store.transaction() as session:
        live = session.get(Job, waiting.id)
        assert live.state == "WAITING"
    client.export("archive", tmp_path / "again.tar", requester=ADA)

    def onto_live_job(record):
        record.update(record_id=str(uuid.uuid4()), campaign_id=str(uuid.uuid4()),
                      job_id=waiting.id, attempt=1)  # fmt: skip

    forge(tmp_path / "again.tar", tmp_path / "live.tar", onto_live_job)
    with pytest.raises(ArchiveError, match="job id"):
        client.import_archive(tmp_path / "live.tar", requester=BOB)
    [status] = client.run(campaign_id, poll_s=0.1, timeout_s=90, requester=ADA)
    assert status.counts == {"COMPLETED": 1}
