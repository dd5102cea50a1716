"""Garbage collection of the artifact store: remove objects no record references.

An object is removed only if no record references it (``record_artifacts``) and it was
written (or re-written) longer ago than a grace period. The grace period protects objects
that a writer has put into the store but whose record is not committed yet: the harvest and
``matdx import`` write objects first and records second, and writing an existing object
freshens its time (:meth:`matdx.store.artifacts.ArtifactStore.put_file`). Collection also
holds the tick lock, so no harvest runs meanwhile. Rows of ``artifacts`` that no record
references are deleted with their objects; leftovers of killed writers (``.incoming-*``
older than the grace period) are removed too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlalchemy import delete, select

from matdx.store.models import Artifact, RecordArtifact
from matdx.store.store import Store

__all__ = ["DEFAULT_GRACE_S", "GarbageReport", "collect_garbage"]

DEFAULT_GRACE_S = 3600.0
CHUNK = 1000


@dataclass
class GarbageReport:
    """What a collection found and did."""

    objects: int = 0  # objects on disk before
    referenced: int = 0  # objects some record references
    removed: list[str] = field(default_factory=list)  # sha256 of removed (or removable) objects
    spared: list[str] = field(default_factory=list)  # unreferenced, but younger than the grace
    freed_bytes: int = 0
    partial_files: int = 0  # leftovers of killed writers removed
    dry_run: bool = False


def collect_garbage(
    store: Store, *, dry_run: bool = False, grace_s: float = DEFAULT_GRACE_S, wait_s: float = 60.0
) -> GarbageReport:
    """Remove unreferenced artifact objects older than ``grace_s`` seconds.

    Parameters
    ----------
    dry_run
        Only report what would be removed.
    grace_s
        Objects written less than this long ago (seconds) are spared.
    wait_s
        How long to wait for a running tick (seconds).

    Raises
    ------
    matdx.store.lock.StoreBusy
        If a tick still holds the store after ``wait_s``.
    """
    report = GarbageReport(dry_run=dry_run)
    with store.tick_lock(wait_s=wait_s):
        on_disk = list(store.artifacts)
        report.objects = len(on_disk)
        with store.transaction() as session:
            referenced = set(session.scalars(select(RecordArtifact.sha256).distinct()))
        report.referenced = len(referenced & set(on_disk))
        cutoff = time.time() - grace_s
        for sha256 in on_disk:
            if sha256 in referenced:
                continue
            path = store.artifacts.path(sha256)
            stat = path.stat()
            if stat.st_mtime > cutoff:
                report.spared.append(sha256)
                continue
            report.removed.append(sha256)
            report.freed_bytes += stat.st_size
        for partial in store.artifacts.incoming():
            if partial.stat().st_mtime <= cutoff:
                report.partial_files += 1
                if not dry_run:
                    partial.unlink(missing_ok=True)
        if dry_run:
            return report
        with store.transaction() as session:
            orphans = list(
                session.scalars(
                    select(Artifact.sha256).where(
                        Artifact.sha256.not_in(select(RecordArtifact.sha256))
                    )
                )
            )
            spared = set(report.spared)
            doomed = [sha for sha in orphans if sha not in spared]
            for start in range(0, len(doomed), CHUNK):
                session.execute(
                    delete(Artifact).where(Artifact.sha256.in_(doomed[start : start + CHUNK]))
                )
        # Files go after their rows are committed: a crash in between leaves an unreferenced
        # file, which the next collection removes, never a row without its file.
        for sha256 in report.removed:
            store.artifacts.remove(sha256)
    return report
