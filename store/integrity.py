"""Integrity checks of the artifact store against the records that reference it."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select

from matdx.store.artifacts import ObjectStatus
from matdx.store.models import Artifact, RecordArtifact
from matdx.store.store import Store

__all__ = ["VerifyReport", "verify_artifacts"]


@dataclass
class VerifyReport:
    checked: int = 0
    missing: list[str] = field(default_factory=list)  # sha256 of objects not on disk
    corrupt: list[str] = field(default_factory=list)  # sha256 of objects whose bytes changed
    referenced_by: dict[str, list[str]] = field(default_factory=dict)  # sha256 -> record ids

    @property
    def ok(self) -> bool:
        return not (self.missing or self.corrupt)


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
