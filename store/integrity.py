"""Integrity checks of the artifact store against the records that reference it, and repair
of missing or corrupt objects from the run directories that still hold their bytes."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from matdx.store.artifacts import CHUNK, ObjectStatus
from matdx.store.models import Artifact, Record, RecordArtifact
from matdx.store.store import Store

__all__ = ["VerifyReport", "repair_artifacts", "verify_artifacts"]

MAX_CANDIDATES = 10_000  # files looked at per run directory when searching for lost bytes


@dataclass
class VerifyReport:
    checked: int = 0
    missing: list[str] = field(default_factory=list)  # sha256 of objects not on disk
    corrupt: list[str] = field(default_factory=list)  # sha256 of objects whose bytes changed
    referenced_by: dict[str, list[str]] = field(default_factory=dict)  # sha256 -> record ids
    repaired: dict[str, str] = field(default_factory=dict)  # sha256 -> file its bytes came from

    @property
    def ok(self) -> bool:
        """Every object present and whole (after any repair)."""
        return not ({*self.missing, *self.corrupt} - set(self.repaired))


def verify_artifacts(store: Store) -> VerifyReport:
    """Re-hash every object the store knows of; report the missing and the corrupt ones with
    the records that reference them."""
    report = VerifyReport()
    with store.transaction() as session:
        known = session.scalars(select(Artifact.sha256).order_by(Artifact.sha256)).all()
    bad: list[str] = []
    for sha256 in known:
        status = store.artifacts.verify(sha256)
        report.checked += 1
        if status == ObjectStatus.MISSING:
            report.missing.append(sha256)
        elif status == ObjectStatus.CORRUPT:
            report.corrupt.append(sha256)
        if status != ObjectStatus.OK:
            bad.append(sha256)
    if bad:
        with store.transaction() as session:
            for record_id, sha256 in session.execute(
                select(RecordArtifact.record_id, RecordArtifact.sha256).where(
                    RecordArtifact.sha256.in_(bad)
                )
            ):
                report.referenced_by.setdefault(sha256, []).append(record_id)
    return report


def repair_artifacts(store: Store, report: VerifyReport | None = None) -> VerifyReport:
    """Verify, then refetch every missing or corrupt object from the run directories of the
    records that reference it, where a regular file with its exact bytes is still found.

    Candidates are the file named like the artifact in each run directory, then any regular
    file of the same size in it (symbolic links are never followed); a candidate is stored
    only if its sha256 matches, so nothing but the original bytes can come back.

    Returns
    -------
    VerifyReport
        With ``repaired`` naming, per object, the file its bytes came from.
    """
    report = report or verify_artifacts(store)
    bad = [*report.missing, *report.corrupt]
    if not bad:
        return report
    with store.transaction() as session:
        sizes = dict(session.execute(select(Artifact.sha256, Artifact.size).where(
            Artifact.sha256.in_(bad))).all())
        places: dict[str, list[tuple[str, str]]] = {}
        for sha256, name, document in session.execute(
            select(RecordArtifact.sha256, RecordArtifact.name, Record.document)
            .join(Record, Record.record_id == RecordArtifact.record_id)
            .where(RecordArtifact.sha256.in_(bad))
        ):
            run_dir = ((document or {}).get("run") or {}).get("run_dir")
            if run_dir:
                places.setdefault(sha256, []).append((run_dir, name))
    for sha256 in bad:
        for candidate in _candidates(places.get(sha256, []), sizes.get(sha256)):
            if _sha256_regular(candidate) != sha256:
                continue
            with open(candidate, "rb") as handle:
                stored, _ = store.artifacts.put_file(handle)
            if stored == sha256 and store.artifacts.verify(sha256) == ObjectStatus.OK:
                report.repaired[sha256] = str(candidate)
                break
    return report


def _candidates(places: list[tuple[str, str]], size: int | None) -> Iterator[Path]:
    for run_dir, name in places:
        named = Path(run_dir) / name
        if ".." not in Path(name).parts and not Path(name).is_absolute():
            yield named
    if size is None:
        return
    for run_dir, _ in places:
        seen = 0
        for root, directories, files in os.walk(run_dir):  # os.walk never follows links
            directories.sort()
            for file in sorted(files):
                seen += 1
                if seen > MAX_CANDIDATES:
                    return
                path = Path(root) / file
                try:
                    info = path.lstat()
                except OSError:
                    continue
                if stat.S_ISREG(info.st_mode) and info.st_size == size:
                    yield path


def _sha256_regular(path: Path) -> str | None:
    """sha256 of a regular file reached without a symbolic link as its last part; None for
    anything else (a FIFO is never opened)."""
    try:
        if not stat.S_ISREG(path.lstat().st_mode):
            return None
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    digest = hashlib.sha256()
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()
