"""Portable archives: SQLite → PostgreSQL gives identical records and artifacts; importing
twice adds nothing; altered or corrupt archives are refused with nothing written."""

from __future__ import annotations

import io
import tarfile
import uuid

import pytest
from sqlalchemy import func, select

from matdx.client import Client
from matdx.store.access import Requester
from matdx.store.archive import ArchiveError
from matdx.store.integrity import verify_artifacts
from matdx.store.models import ProvenanceEdge, Record, RecordArtifact
from matdx.store.records import upgrade_document
from matdx.workflows.executors.local import LocalExecutor
from tests.conftest import matdx_cli

ADA = Requester("ada")
CAMPAIGN = """\
name: to-share
owner: ada
access: public
license: CC0-1.0
studies:
  - recipe: relax
    structures: [{bulk: [Cu, Ni], cubic: true}]
    settings: {max_steps: 4}
  - recipe: md                      # md -> analysis: records linked by provenance
    structures: [{bulk: [Cu], cubic: true}]
    settings: {steps: 40, sample_every: 4}
"""


def snapshot(client: Client) -> dict:
    """Everything an archive carries: documents, outputs, times, links, edges, object bytes."""
    with client.store.transaction() as session:
        records = {
            r.record_id: (upgrade_document(r.document), r.output, r.created_at.timestamp())
            for r in session.scalars(select(Record))
        }
        link = select(
            RecordArtifact.record_id,
            RecordArtifact.role,
            RecordArtifact.name,
            RecordArtifact.sha256,
        )
        edge = select(ProvenanceEdge.parent_id, ProvenanceEdge.child_id, ProvenanceEdge.relation)
        links = {tuple(row) for row in session.execute(link)}
        edges = {tuple(row) for row in session.execute(edge)}
    objects = {sha: client.store.artifacts.path(sha).read_bytes() for *_, sha in links}
    return {"records": records, "links": links, "edges": edges, "objects": objects}


@pytest.fixture
def source(tmp_path, monkeypatch):
    """A SQLite store with a finished campaign (relaxations with trajectory artifacts)."""
    monkeypatch.delenv("MATDX_STORE", raising=False)
    made = Client(
        tmp_path / "source",
        url=f"sqlite:///{tmp_path / 'source' / 'store.sqlite'}",
        executors={"local": LocalExecutor(workers=2)},
    )
    (tmp_path / "share.yaml").write_text(CAMPAIGN)
    made.run(made.submit(tmp_path / "share.yaml"), poll_s=0.1, timeout_s=300)
    yield made
    made.store.dispose()


@pytest.fixture
def target(tmp_path, postgres_server):
    """An empty PostgreSQL store."""
    name = f"target_{uuid.uuid4().hex[:16]}"
    made = Client(tmp_path / "target", url=postgres_server.create_database(name))
    yield made
    made.store.dispose()
    postgres_server.drop_database(name)


def test_archive_from_sqlite_into_postgresql(source, target, tmp_path, monkeypatch):
    report = source.export("archive", tmp_path / "share.tar.gz", requester=ADA)
    before = snapshot(source)
    assert report.records == len(before["records"]) == 4
    assert report.objects == len(before["objects"]) == 3  # one trajectory per relax and md
    assert len(before["edges"]) == 1  # the analysis used the MD record
    assert target.store.backend == "postgresql"

    first = target.import_archive(tmp_path / "share.tar.gz", requester=ADA)
    assert (first.records_added, first.objects_added) == (4, 3)
    assert snapshot(target) == before
    assert verify_artifacts(target.store).ok

    monkeypatch.setenv("MATDX_HOME", str(target.home))
    monkeypatch.setenv("MATDX_STORE", target.store.url)
    monkeypatch.setenv("MATDX_USER", "ada")
    again = matdx_cli("import", str(tmp_path / "share.tar.gz"))
    assert again.returncode == 0, again.stderr
    assert "0 record(s) added, 4 already present; 0 artifact(s) added" in again.stdout
    assert snapshot(target) == before


def rewrite(archive, out, change) -> None:
    """Copy a tar archive, passing each member's bytes through ``change(name, data)``."""
    with tarfile.open(archive) as old, tarfile.open(out, "w") as new:
        for member in old.getmembers():
            data = change(member.name, old.extractfile(member).read())
            member.size = len(data)
            new.addfile(member, io.BytesIO(data))


def test_altered_or_corrupt_archives_are_refused(source, target, tmp_path):
    source.export("archive", tmp_path / "share.tar", requester=ADA)

    def edit_records(name, data):
        return data.replace(b'"max_steps":4', b'"max_steps":5') if name.endswith(".jsonl") else data

    def flip_object(name, data):
        return data[:-1] + bytes([data[-1] ^ 1]) if "/objects/" in name else data

    for change, message in (
        (edit_records, "does not match the manifest"),
        (flip_object, "corrupt"),
    ):
        bad = tmp_path / f"{change.__name__}.tar"
        rewrite(tmp_path / "share.tar", bad, change)
        with pytest.raises(ArchiveError, match=message):
            target.import_archive(bad, requester=ADA)
    with target.store.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Record)) == 0
    (tmp_path / "junk.tar").write_bytes(b"not a tar")
    with pytest.raises(ArchiveError, match="not a readable tar archive"):
        target.import_archive(tmp_path / "junk.tar", requester=ADA)


def test_archives_carry_only_exportable_records(source, tmp_path):
    [record_id] = [r["record_id"] for r in source.query(requester=ADA, limit=1).items]
    source.set_access([record_id], requester=ADA, export_control=True)
    report = source.export("archive", tmp_path / "share.tar", requester=ADA)
    assert report.records == 3
    bob = source.export("archive", tmp_path / "bob.tar", requester=Requester("bob"))
    assert bob.records == 3  # the public ones; never the export-controlled one
