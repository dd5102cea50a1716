"""Selecting the records an export may take out of the store.

Every export format goes through :func:`exportable_records`: the query's criteria, the access
filter for exports (:attr:`~matdx.store.access.Purpose.EXPORT`, or ``EXPORT_ARTIFACTS`` for
formats that carry artifact content; export-controlled records never pass), and an optional
list of accepted licences. Records come in record-id order, a batch of rows at a time, each
document upgraded to the current schema.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from matdx.store.access import Purpose, Requester, access_filter
from matdx.store.licenses import normalize_license
from matdx.store.models import Record, RecordArtifact
from matdx.store.records import CalculationRecord, validate_document
from matdx.store.search import RecordQuery, query_conditions

__all__ = ["ExportedRecord", "claim_export_target", "exportable_records", "license_filter"]

BATCH = 500


@dataclass(frozen=True)
class ExportedRecord:
    """A record on its way out: the validated current-version record, the job's encoded
    output, when it was stored, and its artifact links (role, name, sha256)."""

    record: CalculationRecord
    output: Any
    created_at: datetime
    artifacts: tuple[tuple[str, str, str], ...]


def claim_export_target(fmt: str, path: str | Path, *, overwrite: bool = False) -> None:
    """Refuse to export over an existing file unless ``overwrite`` is set; with it, remove
    the files the export will write.

    ``extxyz`` writes ``train.xyz``, ``validation.xyz`` and ``test.xyz`` into the directory
    ``path``; every other format writes the file ``path`` (an existing ASE database would
    be appended to, any other file replaced).

    Raises
    ------
    FileExistsError
        Naming the file and the ``--overwrite`` option.
    """
    path = Path(path)
    if fmt == "extxyz":
        from matdx.store.export_extxyz import SPLITS

        targets = [path / f"{split}.xyz" for split in SPLITS]
    else:
        targets = [path]
    for target in targets:
        if os.path.lexists(target) and not overwrite:
            raise FileExistsError(
                f"{target} exists; export never overwrites a file unless --overwrite is given"
            )
        if overwrite and target.is_dir():
            raise FileExistsError(f"{target} is a directory; export writes a file there")
    if overwrite:
        for target in targets:
            target.unlink(missing_ok=True)


def license_filter(licenses: Iterable[str] | None) -> list[str] | None:
    """Normalized SPDX expressions to accept, or None for any licence (or none).

    Raises
    ------
    matdx.store.licenses.LicenseError
        If one is not a valid SPDX expression.
    """
    if licenses is None:
        return None
    accepted = {normalize_license(text) for text in licenses}
    return sorted(text for text in accepted if text)


def exportable_records(
    session: Session,
    requester: Requester,
    query: RecordQuery | None = None,
    *,
    licenses: Iterable[str] | None = None,
    artifacts: bool = False,
    now: datetime | None = None,
) -> Iterator[ExportedRecord]:
    """The records ``requester`` may export that match ``query`` (its ``limit`` and
    ``after`` are ignored: an export takes every match).

    Parameters
    ----------
    licenses
        Accept only records under one of these SPDX expressions (a record without a licence
        is then left out); None accepts any.
    artifacts
        The export carries artifact content: records whose artifacts the requester may not
        fetch (an embargo still running) are left out.
    now
        The time embargoes are judged at (UTC); defaults to now.
    """
    accepted = license_filter(licenses)
    purpose = Purpose.EXPORT_ARTIFACTS if artifacts else Purpose.EXPORT
    conditions = [
        *query_conditions(query or RecordQuery()),
        access_filter(requester, purpose, now=now),
    ]
    if accepted is not None:
        conditions.append(Record.license.in_(accepted))
    last = ""
    while True:
        rows = session.execute(
            select(Record.record_id, Record.document, Record.output, Record.created_at)
            .where(and_(*conditions), Record.record_id > last)
            .order_by(Record.record_id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        links: dict[str, list[tuple[str, str, str]]] = {}
        for record_id, role, name, sha256 in session.execute(
            select(
                RecordArtifact.record_id,
                RecordArtifact.role,
                RecordArtifact.name,
                RecordArtifact.sha256,
            )
            .where(RecordArtifact.record_id.in_([row.record_id for row in rows]))
            .order_by(RecordArtifact.record_id, RecordArtifact.role, RecordArtifact.name)
        ):
            links.setdefault(record_id, []).append((role, name, sha256))
        for row in rows:
            yield ExportedRecord(
                record=validate_document(row.document, upgrade=True),
                output=row.output,
                created_at=row.created_at,
                artifacts=tuple(links.get(row.record_id, ())),
            )
        last = rows[-1].record_id
