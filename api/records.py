"""``/records``: the store's record query language with cursor pagination and field
selection; one record; its provenance; its artifacts (downloads with range requests)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse
from sqlalchemy import and_, select

from matdx.api.deps import RequesterDep, SessionDep, SettingsDep, StoreDep
from matdx.store.access import Purpose, access_filter, allowed, discovery_view
from matdx.store.discovery import RECORD_DISCOVERY, discovered_record, row_security_active
from matdx.store.models import ProvenanceEdge, Record, RecordArtifact
from matdx.store.queries import MIN_PREFIX
from matdx.store.records import upgrade_document
from matdx.store.search import (
    SUMMARY_COLUMNS,
    QueryError,
    RecordQuery,
    count_records,
    parse_range,
    search_records,
)

__all__ = ["router"]

router = APIRouter(prefix="/records", tags=["records"])
SUMMARY_KEYS = [
    "formula" if c.key == "chemical_formula_reduced" else c.key for c in SUMMARY_COLUMNS
]
SUMMARY_FIELDS = frozenset({*SUMMARY_KEYS, "properties"})
CSV = Annotated[str | None, Query(description="comma-separated values")]


def _listed(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def record_query(
    *,
    elements: str | None = None,
    any_elements: str | None = None,
    only_elements: str | None = None,
    formula: str | None = None,
    nsites: str | None = None,
    calculation: str | None = None,
    code: str | None = None,
    tags: str | None = None,
    campaign: str | None = None,
    properties: list[str] | None = None,
    status: str | None = None,
    access: str | None = None,
    owner: str | None = None,
    limit: int = 20,
    after: str | None = None,
) -> RecordQuery:
    """A validated :class:`RecordQuery` from HTTP parameters (lists comma-separated, ranges
    ``min:max``, properties ``name=min:max``).

    Raises
    ------
    HTTPException
        400 naming the bad parameter.
    """
    criteria: dict[str, Any] = {"limit": limit}
    for name, value in (
        ("elements", elements),
        ("any_elements", any_elements),
        ("only_elements", only_elements),
        ("calculation", calculation),
        ("code", code),
        ("tags", tags),
        ("campaign_ids", campaign),
        ("access", access),
    ):
        if value is not None:
            criteria[name] = _listed(value)
    for name, value in (
        ("formula", formula),
        ("status", status),
        ("owner", owner),
        ("after", after),
    ):
        if value is not None:
            criteria[name] = value
    try:
        if nsites is not None:
            criteria["nsites"] = parse_range(nsites).model_dump()
        ranges = {}
        for text in properties or []:
            name, sep, bounds = text.partition("=")
            if not sep:
                raise QueryError(f"property {text!r}: expected name=min:max such as band_gap=1:")
            ranges[name.strip()] = parse_range(bounds).model_dump()
        if ranges:
            criteria["properties"] = ranges
        return RecordQuery.parse(**criteria)
    except QueryError as bad:
        raise HTTPException(400, str(bad)) from bad


@router.get("")
def list_records(
    request: Request,
    session: SessionDep,
    requester: RequesterDep,
    settings: SettingsDep,
    elements: CSV = None,
    any_elements: CSV = None,
    only_elements: CSV = None,
    formula: str | None = None,
    nsites: Annotated[str | None, Query(description="range min:max")] = None,
    calculation: CSV = None,
    code: CSV = None,
    tags: CSV = None,
    campaign: Annotated[str | None, Query(description="campaign ids, comma-separated")] = None,
    property: Annotated[
        list[str] | None, Query(description="name=min:max, repeatable (band_gap=1:)")
    ] = None,
    status: str | None = None,
    access: CSV = None,
    owner: str | None = None,
    limit: int = 20,
    after: Annotated[str | None, Query(description="the next_after of the previous page")] = None,
    fields: Annotated[
        str | None, Query(description="summary fields to return, or 'document'")
    ] = None,
    count: Annotated[bool, Query(description="also count every matching record")] = False,
) -> dict[str, Any]:
    """Records the requester may read that match every criterion, a page at a time."""
    if not 1 <= limit <= settings.max_page:
        raise HTTPException(400, f"limit: {limit} is outside 1..{settings.max_page}")
    wanted = _listed(fields)
    documents = wanted == ["document"]
    unknown = set(wanted) - SUMMARY_FIELDS if not documents else set()
    if unknown:
        raise HTTPException(
            400,
            f"fields: unknown {sorted(unknown)}; accepted: {sorted(SUMMARY_FIELDS)} or 'document'",
        )
    query = record_query(
        elements=elements,
        any_elements=any_elements,
        only_elements=only_elements,
        formula=formula,
        nsites=nsites,
        calculation=calculation,
        code=code,
        tags=tags,
        campaign=campaign,
        properties=property,
        status=status,
        access=access,
        owner=owner,
        limit=limit,
        after=after,
    )
    page = search_records(session, query, requester, documents=documents)
    items, next_after = page.items, page.next_after
    if wanted and not documents:
        items = [{k: item.get(k) for k in ["record_id", *wanted]} for item in items]
    next_url = None
    if next_after is not None:
        next_url = str(request.url.include_query_params(after=next_after))
    answer = {"items": items, "next_after": next_after, "next": next_url}
    if count:
        answer["count"] = count_records(session, query, requester)
    return answer


def _readable(session: Any, requester: Any, record_id: str) -> dict[str, Any] | None:
    """Raise 404 unless the requester may discover the record; the discovery row when only
    the view ``record_discovery`` shows it (PostgreSQL, a running embargo), else None."""
    if allowed(session, requester, Purpose.READ, [record_id]):
        return None
    hidden = discovered_record(session, record_id)
    if hidden is None and MIN_PREFIX <= len(record_id) < 36:
        raise HTTPException(
            404,
            f"record {record_id}: no such record visible to {requester.name} "
            f"(a prefix? see /records/resolve/{record_id})",
        )
    if hidden is None:
        raise HTTPException(404, f"record {record_id}: no such record visible to {requester.name}")
    return hidden


@router.get("/resolve/{prefix}")
def resolve_record(prefix: str, session: SessionDep, requester: RequesterDep) -> dict[str, str]:
    """The id of the one record the requester may discover whose id starts with ``prefix``
    (at least 4 characters, as ``matdx show`` takes them)."""
    if len(prefix) < MIN_PREFIX or not all(c in "0123456789abcdef-" for c in prefix):
        raise HTTPException(400, f"prefix {prefix!r}: at least {MIN_PREFIX} characters of an id")
    if row_security_active(session.connection()):
        # PostgreSQL as a person's role: record_discovery holds every id the role may know of,
        # embargoed records it may only discover included (records hides those rows).
        column = RECORD_DISCOVERY.c.record_id
        statement = select(column).where(column.startswith(prefix, autoescape=True))
    else:
        column = Record.record_id
        statement = select(column).where(
            column.startswith(prefix, autoescape=True), access_filter(requester, Purpose.READ)
        )
    matches = list(session.scalars(statement.order_by(column).limit(2)))
    if len(matches) != 1:
        found = ", ".join(m[:12] for m in matches) or "no visible record"
        raise HTTPException(404, f"record {prefix!r}: matches {found}")
    return {"record_id": matches[0]}


@router.get("/{record_id}")
def get_record(record_id: str, session: SessionDep, requester: RequesterDep) -> dict[str, Any]:
    """One record's document (current schema); under a running embargo, an outsider gets its
    discovery metadata only."""
    hidden = _readable(session, requester, record_id)
    if hidden is not None:
        return hidden
    row = session.get(Record, record_id)
    if row is None:  # the database's row-level security hides it from the requester's role
        raise HTTPException(404, f"record {record_id}: no such record visible to {requester.name}")
    if not allowed(session, requester, Purpose.RESULTS, [record_id]):
        return discovery_view(row.document, row.created_at)
    return upgrade_document(row.document)


@router.get("/{record_id}/provenance")
def provenance(record_id: str, session: SessionDep, requester: RequesterDep) -> dict[str, Any]:
    """The records this one was made from (parents) and made from it (children), as far as
    the requester may read them."""
    _readable(session, requester, record_id)
    visible = access_filter(requester, Purpose.READ)

    def linked(mine: Any, other: Any) -> list[dict[str, str]]:
        rows = session.execute(
            select(other, ProvenanceEdge.relation)
            .join(Record, Record.record_id == other)
            .where(and_(mine == record_id, visible))
            .order_by(other)
        ).all()
        return [{"record_id": r[0], "relation": r[1]} for r in rows]

    return {
        "record_id": record_id,
        "parents": linked(ProvenanceEdge.child_id, ProvenanceEdge.parent_id),
        "children": linked(ProvenanceEdge.parent_id, ProvenanceEdge.child_id),
    }


@router.get("/{record_id}/artifacts")
def list_artifacts(record_id: str, session: SessionDep, requester: RequesterDep) -> dict[str, Any]:
    """The record's artifacts and whether the requester may download them."""
    _readable(session, requester, record_id)
    fetchable = bool(allowed(session, requester, Purpose.ARTIFACTS, [record_id]))
    rows = session.execute(
        select(RecordArtifact.role, RecordArtifact.name, RecordArtifact.sha256)
        .where(RecordArtifact.record_id == record_id)
        .order_by(RecordArtifact.role, RecordArtifact.name)
    ).all()
    return {
        "record_id": record_id,
        "downloadable": fetchable,
        "artifacts": [{"role": r.role, "name": r.name, "sha256": r.sha256} for r in rows],
    }


def _check_name(name: str) -> None:
    if not name or "/" in name or "\\" in name or name in (".", "..") or "\x00" in name:
        raise HTTPException(400, f"artifact name {name!r}: a plain file name, without / or ..")


@router.get("/{record_id}/artifacts/{role}/{name}")
def download_artifact(
    record_id: str,
    role: str,
    name: str,
    session: SessionDep,
    requester: RequesterDep,
    store: StoreDep,
) -> FileResponse:
    """The bytes of one artifact (``role``: input or output); ``Range`` requests are served.
    Artifacts of records under a running embargo stay with the owner and project (403)."""
    if role not in ("input", "output"):
        raise HTTPException(400, f"role {role!r}: expected 'input' or 'output'")
    _check_name(name)
    hidden = _readable(session, requester, record_id)
    if hidden is not None or not allowed(session, requester, Purpose.ARTIFACTS, [record_id]):
        raise HTTPException(
            403, f"the artifacts of record {record_id} are withheld from {requester.name} (embargo)"
        )
    row = session.execute(
        select(RecordArtifact.sha256).where(
            RecordArtifact.record_id == record_id,
            RecordArtifact.role == role,
            RecordArtifact.name == name,
        )
    ).first()
    if row is None:
        raise HTTPException(404, f"record {record_id} has no {role} artifact named {name!r}")
    path = store.artifacts.path(row.sha256)
    if not path.is_file():
        raise HTTPException(410, f"artifact {row.sha256} is missing from the store")
    return FileResponse(path, filename=name, media_type="application/octet-stream")
