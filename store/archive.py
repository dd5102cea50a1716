"""Portable archives: records (JSON Lines) with their artifacts, from one store to another.

An archive is a tar file (``.tar``, or gzip-compressed ``.tar.gz`` / ``.tgz``)::

    matdx-archive/records.jsonl     one record per line: {"record": <document>,
                                    "output": <encoded job output>, "created_at": <ISO 8601>,
                                    "links": [[role, name, sha256], ...]}
    matdx-archive/objects/<sha256>  every artifact the records reference, once
    matdx-archive/manifest.json     format, version, counts and the sha256 of records.jsonl

:func:`import_archive` loads one into a store without duplicates. The archive's governance
is not trusted: every imported record is stamped with the importer as its owner (its project,
access level, embargo, licence and export control are kept) and marked as imported by an
``import`` entry in the audit log that keeps the archive's owner. An archive whose records
would join or collide with this store's campaigns or jobs (a campaign id of the store, a
record of another owner's campaign, a job id or a job attempt the store already has) is
refused whole, with the collisions named. Records whose id the store already holds are
skipped (a record with the same id but other content is reported as a
conflict, never overwritten), objects already present are not copied again, and every
object's bytes are re-hashed against its name. All records of an archive are written in one
transaction, after their objects: a failed import leaves no record behind (only unreferenced
objects, which ``matdx store gc`` removes), and importing again is harmless.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from matdx.store.artifacts import ArtifactStore, sha256_file
from matdx.store.exporting import ExportedRecord
from matdx.store.models import (
    Artifact,
    AuditEntry,
    Campaign,
    Job,
    ProvenanceEdge,
    Record,
    RecordArtifact,
    utcnow,
)
from matdx.store.records import upgrade_document, validate_document

__all__ = ["ArchiveError", "ArchiveReport", "ImportReport", "import_archive", "write_archive"]

FORMAT = "matdx-archive"
VERSION = 1
ROOT = "matdx-archive"
CHUNK = 500


class ArchiveError(ValueError):
    """An archive is malformed or corrupt, or an artifact to archive is missing."""


@dataclass
class ArchiveReport:
    records: int = 0
    objects: int = 0
    bytes: int = 0
    path: Path | None = None


@dataclass
class ImportReport:
    records_added: int = 0
    records_present: int = 0  # same id and content already in the store
    conflicts: list[str] = field(default_factory=list)  # same id, other content: not imported
    objects_added: int = 0
    objects_present: int = 0


def _open_for_writing(path: Path) -> tarfile.TarFile:
    compressed = path.name.endswith((".tar.gz", ".tgz"))
    return tarfile.open(path, "w:gz" if compressed else "w", format=tarfile.PAX_FORMAT)


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(f"{ROOT}/{name}")
    info.size = len(data)
    info.mtime = int(datetime.now(UTC).timestamp())
    info.mode = 0o644
    archive.addfile(info, io.BytesIO(data))


def _media_types(exported: ExportedRecord) -> dict[str, tuple[str, int]]:
    return {a.sha256: (a.media_type, a.size) for a in exported.record.artifacts}


def write_archive(
    records: Iterable[ExportedRecord], path: str | Path, *, artifacts: ArtifactStore
) -> ArchiveReport:
    """Write the records and the artifacts they reference into a new archive.

    Parameters
    ----------
    records
        Records to archive (:func:`matdx.store.exporting.exportable_records` with
        ``artifacts=True``).
    artifacts
        The store's artifact objects.

    Raises
    ------
    ArchiveError
        If a referenced object is missing or corrupt (run ``matdx store verify``); no archive
        is left behind.
    FileExistsError
        If ``path`` exists.
    """
    target = Path(path)
    if target.exists():
        raise FileExistsError(f"{target}: exists; choose a new archive name")
    report = ArchiveReport(path=target)
    partial = target.with_name(f".{target.name}.partial")
    metadata: dict[str, dict[str, Any]] = {}
    try:
        with tempfile.TemporaryFile("w+b") as lines, _open_for_writing(partial) as archive:
            digest = hashlib.sha256()
            for exported in records:
                record = exported.record
                line = (
                    json.dumps(
                        {
                            "record": record.model_dump(mode="json"),
                            "output": exported.output,
                            "created_at": exported.created_at.isoformat(),
                            "links": [list(link) for link in exported.artifacts],
                        },
                        separators=(",", ":"),
                        ensure_ascii=False,
                    ).encode()
                    + b"\n"
                )
                lines.write(line)
                digest.update(line)
                report.records += 1
                known = _media_types(exported)
                for _, _, sha256 in exported.artifacts:
                    if sha256 in metadata:
                        continue
                    source = artifacts.path(sha256)
                    if not source.is_file() or sha256_file(source)[0] != sha256:
                        raise ArchiveError(
                            f"artifact {sha256} of record {record.record_id} is missing or "
                            "corrupt in the store; run `matdx store verify`"
                        )
                    media_type, size = known.get(
                        sha256, ("application/octet-stream", source.stat().st_size)
                    )
                    metadata[sha256] = {"sha256": sha256, "media_type": media_type, "size": size}
                    archive.add(str(source), arcname=f"{ROOT}/objects/{sha256}")
                    report.objects += 1
                    report.bytes += size
            lines.seek(0)
            info = tarfile.TarInfo(f"{ROOT}/records.jsonl")
            info.size = lines.seek(0, os.SEEK_END)
            info.mtime = int(datetime.now(UTC).timestamp())
            lines.seek(0)
            archive.addfile(info, lines)
            manifest = {
                "format": FORMAT,
                "version": VERSION,
                "created_at": datetime.now(UTC).isoformat(),
                "records": report.records,
                "records_sha256": digest.hexdigest(),
                "objects": sorted(metadata.values(), key=lambda o: o["sha256"]),
            }
            _add_bytes(archive, "manifest.json", json.dumps(manifest, indent=1).encode())
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return report


def _member(archive: tarfile.TarFile, name: str) -> IO[bytes]:
    try:
        handle = archive.extractfile(f"{ROOT}/{name}")
    except KeyError as err:
        raise ArchiveError(f"archive: no {name}; not a matdx archive?") from err
    if handle is None:
        raise ArchiveError(f"archive: {name} is not a regular file")
    return handle


def _records(archive: tarfile.TarFile, manifest: dict[str, Any]) -> Iterator[dict[str, Any]]:
    digest = hashlib.sha256()
    count = 0
    for number, line in enumerate(_member(archive, "records.jsonl"), start=1):
        digest.update(line)
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as err:
            raise ArchiveError(f"records.jsonl line {number}: not JSON ({err})") from err
        count += 1
        yield entry
    if digest.hexdigest() != manifest.get("records_sha256") or count != manifest.get("records"):
        raise ArchiveError("records.jsonl does not match the manifest (truncated or altered)")


def _read_manifest(archive: tarfile.TarFile) -> dict[str, Any]:
    try:
        manifest = json.load(_member(archive, "manifest.json"))
    except json.JSONDecodeError as err:
        raise ArchiveError(f"manifest.json: not JSON ({err})") from err
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise ArchiveError(
            f"manifest.json: format {manifest.get('format')!r} version "
            f"{manifest.get('version')!r}; this matdx reads {FORMAT!r} version {VERSION}"
        )
    return manifest


def _copy_object(archive: tarfile.TarFile, sha256: str, artifacts: ArtifactStore) -> None:
    """Copy one object into the store, re-hashing it: a corrupt object is refused."""
    source = _member(archive, f"objects/{sha256}")
    artifacts.root.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=artifacts.root, prefix=".incoming-", delete=False) as out:
        shutil.copyfileobj(source, out)
    try:
        stored, _ = artifacts.put_file(out.name)
    finally:
        os.unlink(out.name)
    if stored != sha256:
        raise ArchiveError(f"archive object {sha256} is corrupt (its content hashes to {stored})")


def _insert_missing_artifacts(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert artifact rows the store lacks. A harvest inserting the same object at the same
    time is tolerated (ON CONFLICT DO NOTHING on both backends)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    for start in range(0, len(rows), CHUNK):
        session.execute(
            dialect_insert(Artifact.__table__).on_conflict_do_nothing(index_elements=["sha256"]),
            rows[start : start + CHUNK],
        )


def import_archive(
    session: Session, path: str | Path, *, artifacts: ArtifactStore, importer: str
) -> ImportReport:
    """Load an archive's records and artifacts into a store (in the caller's transaction),
    each record stamped with ``importer`` as its owner and marked as imported.

    Raises
    ------
    ArchiveError
        If the archive is malformed, altered or holds a corrupt object, or if its records
        would join or collide with campaigns or jobs of the store (nothing is written).
    RecordSchemaError
        If a record does not follow the schema (nothing is written).
    """
    if not importer:
        raise ArchiveError("import: the importer (the owner of the imported records) is unknown")
    report = ImportReport()
    source = Path(path)
    if not source.is_file():
        raise ArchiveError(f"archive: no such file {str(source)!r}")
    try:
        with tarfile.open(source, "r:*") as archive:
            new, documents, objects, needed, claimed = _stage(
                archive, session, artifacts, report, importer
            )
    except tarfile.TarError as err:
        raise ArchiveError(f"{source}: not a readable tar archive ({err})") from err
    _insert_missing_artifacts(
        session,
        [
            {
                "sha256": sha,
                "size": artifacts.path(sha).stat().st_size,  # the bytes, not the manifest
                "media_type": str(objects[sha]["media_type"]),
                "created_at": utcnow(),
            }
            for sha in needed
        ],
    )
    for start in range(0, len(new), CHUNK):
        chunk = new[start : start + CHUNK]
        session.execute(
            insert(Record),
            [
                {
                    "document": documents[entry["record"]["record_id"]],
                    "output": entry.get("output"),
                    "created_at": datetime.fromisoformat(entry["created_at"]),
                }
                for entry in chunk
            ],
        )
        links = [
            {"record_id": entry["record"]["record_id"], "role": role, "name": name, "sha256": sha}
            for entry in chunk
            for role, name, sha in entry.get("links", [])
        ]
        if links:
            session.execute(insert(RecordArtifact), links)
    report.records_added = len(new)
    _link_provenance(session, [documents[e["record"]["record_id"]] for e in new])
    session.add_all(
        AuditEntry(
            actor=importer,
            action="import",
            record_id=record_id,
            before=claimed[record_id],
            after=documents[record_id]["governance"],
            reason=f"imported from archive {source.name}",
        )
        for record_id in (e["record"]["record_id"] for e in new)
    )
    return report


def _stamp(document: dict[str, Any], importer: str) -> dict[str, Any]:
    """The archive's governance section, and the document stamped with the importer."""
    claimed = dict(document.get("governance") or {})
    document["governance"] = {**claimed, "owner": importer}
    return claimed


def _check_collisions(session: Session, entries: list[dict[str, Any]], importer: str) -> None:
    """Refuse records that would join a campaign of the store, or another owner's imported
    campaign, or that name a job (or a job attempt) the store already has: such a record
    would read as that campaign's, or stop the job's harvest."""
    records = [e["record"] for e in entries]
    campaign_ids = sorted({r["campaign_id"] for r in records})
    job_ids = sorted({r["job_id"] for r in records})
    problems = []
    campaigns = set(session.scalars(select(Campaign.id).where(Campaign.id.in_(campaign_ids))))
    if campaigns:
        problems.append(f"campaign(s) of this store {sorted(campaigns)[:3]}")
    foreign = set(
        session.scalars(
            select(Record.campaign_id)
            .where(Record.campaign_id.in_(campaign_ids), Record.owner != importer)
            .distinct()
        )
    )
    if foreign:
        problems.append(f"campaign(s) of other owners' records {sorted(foreign)[:3]}")
    jobs = set(session.scalars(select(Job.id).where(Job.id.in_(job_ids))))
    if jobs:
        problems.append(f"job id(s) of this store {sorted(jobs)[:3]}")
    attempts = {(r["job_id"], r["attempt"]) for r in records}
    taken = {
        (row.job_id, row.attempt)
        for row in session.execute(
            select(Record.job_id, Record.attempt).where(Record.job_id.in_(job_ids))
        )
    } & attempts
    if taken:
        problems.append(f"job attempt(s) already recorded {sorted(taken)[:3]}")
    if problems:
        raise ArchiveError(
            "import refused: the archive's records would join or collide with "
            + "; ".join(problems)
            + "; nothing was imported"
        )


def _stage(
    archive: tarfile.TarFile,
    session: Session,
    artifacts: ArtifactStore,
    report: ImportReport,
    importer: str,
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any], list[str], dict[str, Any]]:
    """Read and check the archive, stamp its records, decide what is new, check that the
    new ones collide with nothing, and copy the new objects in."""
    manifest = _read_manifest(archive)
    objects = {o["sha256"]: o for o in manifest.get("objects", [])}
    entries = list(_records(archive, manifest))
    documents, claimed = {}, {}
    for entry in entries:
        try:
            document = upgrade_document(entry["record"])
            claimed[document["record_id"]] = _stamp(document, importer)
            validate_document(document)
        except (KeyError, TypeError, AttributeError) as err:
            raise ArchiveError(f"records.jsonl: an entry without a record ({err})") from err
        documents[document["record_id"]] = document
    ids = list(documents)
    present: dict[str, Any] = {}
    for start in range(0, len(ids), CHUNK):
        present.update(
            (row.record_id, row.document)
            for row in session.execute(
                select(Record.record_id, Record.document).where(
                    Record.record_id.in_(ids[start : start + CHUNK])
                )
            )
        )
    new = []
    for entry in entries:
        record_id = entry["record"]["record_id"]
        if record_id in present:
            if upgrade_document(present[record_id]) == documents[record_id]:
                report.records_present += 1
            else:
                report.conflicts.append(record_id)
            continue
        new.append(entry)
    if new:
        _check_collisions(session, new, importer)
    needed = sorted({sha for entry in new for _, _, sha in entry.get("links", [])})
    unknown = [sha for sha in needed if sha not in objects]
    if unknown:
        raise ArchiveError(f"archive: records reference objects it lacks: {unknown[:3]}")
    for sha256 in needed:
        if artifacts.exists(sha256):
            # Re-written, as far as gc's grace period goes: an unreferenced object this import
            # is about to reference must not be collected before the import commits.
            os.utime(artifacts.path(sha256))
            report.objects_present += 1
        else:
            _copy_object(archive, sha256, artifacts)
            report.objects_added += 1
    return new, documents, objects, needed, claimed


def _link_provenance(session: Session, documents: list[dict[str, Any]]) -> None:
    """Provenance edges of the imported records whose other end is in the store."""
    wanted = set()
    for document in documents:
        for parent in document.get("parents", []):
            wanted.add((parent, document["record_id"], "input"))
        if document.get("retry_of"):
            wanted.add((document["retry_of"], document["record_id"], "retry_of"))
    if not wanted:
        return
    ends = {p for p, _, _ in wanted} | {c for _, c, _ in wanted}
    known = set(session.scalars(select(Record.record_id).where(Record.record_id.in_(ends))))
    existing = {
        tuple(row)
        for row in session.execute(
            select(
                ProvenanceEdge.parent_id, ProvenanceEdge.child_id, ProvenanceEdge.relation
            ).where(ProvenanceEdge.child_id.in_({c for _, c, _ in wanted}))
        )
    }
    rows = [
        {"parent_id": p, "child_id": c, "relation": r}
        for p, c, r in sorted(wanted - existing)
        if p in known and c in known
    ]
    if rows:
        session.execute(insert(ProvenanceEdge), rows)
