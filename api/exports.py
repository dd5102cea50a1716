"""``/exports/{format}``: records that may leave the store (the export access filter:
export-controlled records never do), streamed as OPTIMADE JSON Lines, Parquet or extxyz."""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import FileResponse, StreamingResponse
from starlette.background import BackgroundTask

from matdx.api.acting_role import transaction_as
from matdx.api.deps import RequesterDep, StoreDep
from matdx.api.records import record_query
from matdx.store.access import Requester
from matdx.store.export_optimade import API_VERSION, info_line, optimade_entry
from matdx.store.exporting import exportable_records
from matdx.store.search import RecordQuery
from matdx.store.store import Store

__all__ = ["router"]

router = APIRouter(prefix="/exports", tags=["exports"])
FORMATS = ("optimade-jsonl", "parquet", "extxyz")


def export_query(
    elements: str | None = None,
    formula: str | None = None,
    calculation: str | None = None,
    code: str | None = None,
    tags: str | None = None,
    campaign: str | None = None,
) -> RecordQuery:
    """The records to export (comma-separated lists, as ``/records`` takes them)."""
    return record_query(
        elements=elements,
        formula=formula,
        calculation=calculation,
        code=code,
        tags=tags,
        campaign=campaign,
    )


QueryDep = Annotated[RecordQuery, Depends(export_query)]


def _jsonl(store: Store, requester: Requester, query: RecordQuery) -> Iterator[bytes]:
    yield (json.dumps({"x-optimade": {"api_version": API_VERSION}}) + "\n").encode()
    yield (json.dumps(info_line(), ensure_ascii=False) + "\n").encode()
    with transaction_as(store, requester) as session:
        for exported in exportable_records(session, requester, query):
            entry = optimade_entry(exported)
            if entry is not None:
                yield (json.dumps(entry, ensure_ascii=False) + "\n").encode()


@router.get("/{fmt}", response_model=None)
def export(
    fmt: str, store: StoreDep, requester: RequesterDep, query: QueryDep
) -> StreamingResponse | FileResponse:
    """Export the matching records the requester may take out of the store."""
    if fmt not in FORMATS:
        raise HTTPException(400, f"format {fmt!r}: accepted {', '.join(FORMATS)}")
    if fmt == "optimade-jsonl":
        return StreamingResponse(_jsonl(store, requester, query), media_type="application/x-ndjson")
    scratch = Path(tempfile.mkdtemp(prefix="matdx-export-"))
    cleanup = BackgroundTask(shutil.rmtree, scratch, ignore_errors=True)
    try:
        path = _write(fmt, store, requester, query, scratch)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    media = "application/vnd.apache.parquet" if fmt == "parquet" else "application/zip"
    return FileResponse(path, media_type=media, filename=path.name, background=cleanup)


def _write(fmt: str, store: Store, requester: Requester, query: RecordQuery, scratch: Path) -> Path:
    with transaction_as(store, requester) as session:
        if fmt == "parquet":
            from matdx.store.export_parquet import write_parquet

            path = scratch / "records.parquet"
            write_parquet(exportable_records(session, requester, query), path)
            return path
        from matdx.store.export_extxyz import write_extxyz

        records = exportable_records(session, requester, query, artifacts=True)
        write_extxyz(records, scratch / "extxyz", artifacts=store.artifacts)
    archive = scratch / "records-extxyz.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        for file in sorted((scratch / "extxyz").iterdir()):
            out.write(file, file.name)
    return archive
