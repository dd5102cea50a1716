"""OPTIMADE v1.2 at ``/optimade/v1``: ``info``, ``info/structures``, ``links``, ``structures``
and ``structures/{id}``, plus the unversioned ``/optimade/versions``.

Entries are the store's records that have a structure, as
:func:`matdx.store.export_optimade.optimade_entry` writes them, validated by the ``optimade``
package's models. Which records a requester sees is decided by the store's access filter for
:attr:`~matdx.store.access.Purpose.EXPORT` (export-controlled records never appear);
the results (``_matdx_energy``, forces, ...) of records whose artifacts the requester may not
fetch yet (a running embargo) are withheld, and filters or sorts on results leave those
records out. Pagination: ``page_limit`` with an opaque ``page_cursor`` (keyset on the record
id in the default order; an offset under ``sort``), or ``page_offset``.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import and_, func, select

from matdx.api.deps import RequesterDep, SessionDep, SettingsDep
from matdx.api.optimade_fields import FIELDS
from matdx.api.optimade_filter import FilterError, FilterNotSupported, parse_filter
from matdx.store.access import Purpose, Requester, access_filter, allowed
from matdx.store.export_optimade import API_VERSION, PREFIX, optimade_entry
from matdx.store.exporting import ExportedRecord
from matdx.store.models import Record
from matdx.store.records import validate_document

__all__ = ["OptimadeError", "optimade_error_response", "router"]

router = APIRouter(prefix="/optimade", tags=["optimade"])
BASE = "/optimade/v1"
RESULT_FIELDS = frozenset(
    PREFIX + name
    for name in (
        "energy",
        "energy_per_atom",
        "forces",
        "stress",
        "magnetic_moments",
        "total_magnetization",
        "band_gap",
        "fermi_level",
        "converged",
        "properties",
    )
)
SCHEMA = "https://schemas.optimade.org/openapi/v1.2/optimade.json"
KNOWN_PARAMETERS = frozenset(
    {
        "filter",
        "response_format",
        "email_address",
        "response_fields",
        "sort",
        "page_limit",
        "page_offset",
        "page_cursor",
        "page_number",
        "page_above",
        "page_below",
        "include",
        "api_hint",
    }
)
TITLES = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    501: "Not Implemented",
    553: "Version Not Supported",
    401: "Unauthorized",
    413: "Payload Too Large",
    429: "Too Many Requests",
    422: "Unprocessable Entity",
    500: "Internal Server Error",
}


class OptimadeError(Exception):
    """An error answered in OPTIMADE's error format."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _version() -> str:
    from importlib.metadata import version

    return version("matdx")


def _meta(request: Request, **extra: Any) -> dict[str, Any]:
    query = request.url.query
    meta = {
        "query": {
            "representation": request.url.path.removeprefix(BASE) + (f"?{query}" if query else "")
        },
        "api_version": API_VERSION,
        "more_data_available": False,
        "time_stamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "provider": {
            "name": "matdx",
            "description": "calculation records of a matdx store",
            "prefix": PREFIX.strip("_"),
            "homepage": None,
        },
        "implementation": {"name": "matdx", "version": _version()},
        "schema": SCHEMA,
    }
    meta.update(extra)
    return meta


def optimade_error_response(request: Request, status: int, detail: str) -> JSONResponse:
    """The OPTIMADE error document for ``status`` with ``detail``."""
    body = {
        "errors": [{"status": str(status), "title": TITLES.get(status, "Error"), "detail": detail}],
        "meta": _meta(request),
    }
    return JSONResponse(body, status_code=status)


def _base_url(request: Request, settings: Any) -> str:
    return (settings.base_url or str(request.base_url)).rstrip("/")


@router.get("/versions", response_class=PlainTextResponse)
def versions() -> PlainTextResponse:
    """The major versions served (text/csv)."""
    return PlainTextResponse("version\n1\n", media_type="text/csv; header=present")


@router.get("/v1/versions", include_in_schema=False, response_class=PlainTextResponse)
def versions_v1() -> PlainTextResponse:
    return versions()


@router.get("/v1/info")
def info(request: Request, settings: SettingsDep) -> dict[str, Any]:
    """The base information of this OPTIMADE implementation."""
    base = _base_url(request, settings)
    return {
        "data": {
            "type": "info",
            "id": "/",
            "attributes": {
                "api_version": API_VERSION,
                "available_api_versions": [{"url": f"{base}{BASE}", "version": API_VERSION}],
                "formats": ["json"],
                "available_endpoints": ["info", "links", "structures"],
                "entry_types_by_format": {"json": ["structures"]},
                "is_index": False,
            },
        },
        "meta": _meta(request),
    }


def _property_info(name: str) -> dict[str, Any]:
    field = FIELDS[name]
    described = {"description": field.description, "type": field.kind, "sortable": field.sortable}
    if field.unit:
        described["unit"] = field.unit
    return described


@router.get("/v1/info/structures")
def info_structures(request: Request) -> dict[str, Any]:
    """The properties of ``structures`` entries: description, type, unit, sortable."""
    return {
        "data": {
            "id": "structures",
            "type": "info",
            "formats": ["json"],
            "description": "the structure and results of each matdx calculation record",
            "properties": {name: _property_info(name) for name in FIELDS},
            "output_fields_by_format": {"json": list(FIELDS)},
        },
        "meta": _meta(request),
    }


@router.get("/v1/links")
def links(request: Request) -> dict[str, Any]:
    """Links to other OPTIMADE databases: none."""
    return {"data": [], "meta": _meta(request, data_returned=0, data_available=0)}


def _check_parameters(request: Request) -> list[dict[str, str]]:
    warnings = []
    for key in request.query_params:
        if key not in KNOWN_PARAMETERS and not key.startswith("_"):
            warnings.append(
                _warning(f"query parameter {key!r} is not an OPTIMADE parameter; ignored")
            )
    response_format = request.query_params.get("response_format", "json")
    if response_format != "json":
        raise OptimadeError(400, f"response_format {response_format!r}: only 'json' is served")
    include = request.query_params.get("include")
    if include not in (None, ""):
        raise OptimadeError(400, f"include {include!r}: structures have no relationships here")
    return warnings


def _warning(detail: str) -> dict[str, str]:
    return {"type": "warning", "title": "Warning", "detail": detail}


def _standard_fields() -> frozenset[str]:
    from optimade.models import StructureResourceAttributes

    return frozenset(StructureResourceAttributes.model_fields)


def _response_fields(text: str | None) -> set[str] | None:
    """The fields asked for; standard OPTIMADE fields this service does not hold, and fields
    of other providers, come back as null."""
    if text is None:
        return None
    names = {n.strip() for n in text.split(",") if n.strip()}
    for name in names:
        foreign = name.startswith("_") and not name.startswith(PREFIX)
        if name not in FIELDS and name not in _standard_fields() and not foreign:
            raise OptimadeError(400, f"response_fields: {name!r} is not a field of structures")
    return names


def _positive_int(request: Request, name: str, default: int | None) -> int | None:
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError as err:
        raise OptimadeError(400, f"{name}: {text!r} is not an integer") from err
    if value < 0 or (name == "page_limit" and value == 0):
        raise OptimadeError(400, f"{name}: {value} must be positive")
    return value


def _encode_cursor(state: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(state).encode()).decode().rstrip("=")


def _decode_cursor(text: str) -> dict[str, Any]:
    try:
        state = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError) as err:
        raise OptimadeError(400, "page_cursor: not a cursor this service issued") from err
    if not (
        isinstance(state, dict)
        and (
            isinstance(state.get("after"), str)
            or (isinstance(state.get("offset"), int) and state["offset"] >= 0)
        )
        and (isinstance(state.get("returned"), int) or "returned" not in state)
    ):
        raise OptimadeError(400, "page_cursor: not a cursor this service issued")
    return state


def _sort_columns(text: str | None) -> tuple[list[Any], bool]:
    """ORDER BY terms for ``sort`` and whether a result field is among them."""
    if not text:
        return [], False
    terms, results = [], False
    for part in (p.strip() for p in text.split(",")):
        descending = part.startswith("-")
        name = part.lstrip("-")
        field = FIELDS.get(name)
        if field is None:
            raise OptimadeError(400, f"sort: {name!r} is not a field of structures")
        if not field.sortable:
            raise OptimadeError(400, f"sort: {name!r} is not sortable")
        results = results or name in RESULT_FIELDS
        column = field.column()
        terms.append(column.desc() if descending else column.asc())
    return terms, results


def _entry(row: Any, withheld: bool, fields: set[str] | None) -> dict[str, Any]:
    from optimade.models import StructureResource

    exported = ExportedRecord(
        record=validate_document(row.document, upgrade=True),
        output=None,
        created_at=row.created_at,
        artifacts=(),
    )
    entry = optimade_entry(exported)
    assert entry is not None  # the query selects records with a structure
    attributes = entry["attributes"]
    if withheld:
        for name in RESULT_FIELDS:
            attributes.pop(name, None)
    resource = StructureResource.model_validate(entry)
    dumped = resource.model_dump(mode="json", exclude_unset=True)
    if fields is not None:
        dumped["attributes"] = {
            name: dumped["attributes"].get(name)
            for name in sorted(fields)
            if name not in ("id", "type")
        }
    return dumped


def _visible(requester: Requester) -> Any:
    return and_(access_filter(requester, Purpose.EXPORT), Record.nsites.is_not(None))


def _available(session: Any, requester: Requester) -> int:
    """How many structures ``requester`` may see, counted in indexes only: the records the
    access filter lets out (the access-check index holds every column it reads) less those
    without a structure (found through the index on ``nsites``). Counting the structures
    directly reads every visible row of the table, documents and all."""
    let_out = access_filter(requester, Purpose.EXPORT)
    records = session.scalar(select(func.count()).select_from(Record).where(let_out)) or 0
    without = session.scalar(
        select(func.count()).select_from(Record).where(let_out, Record.nsites.is_(None))
    )
    return records - (without or 0)


def _withheld(session: Any, requester: Requester, ids: list[str]) -> set[str]:
    return set(ids) - allowed(session, requester, Purpose.ARTIFACTS, ids)


@router.get("/v1/structures")
def structures(
    request: Request, session: SessionDep, requester: RequesterDep, settings: SettingsDep
) -> JSONResponse:
    """Structures matching ``filter``, a page at a time.

    ``data_returned`` is counted once, for the first page, and carried by the cursor (a
    record stored while a client pages on is not counted); the last page needs no count.
    The answer is serialised once (already validated by the ``optimade`` models), not walked
    again by FastAPI's encoder."""
    warnings = _check_parameters(request)
    params = request.query_params
    limit = _positive_int(request, "page_limit", settings.default_page)
    assert limit is not None
    if limit > settings.max_page:
        raise OptimadeError(403, f"page_limit {limit} exceeds the maximum of {settings.max_page}")
    fields = _response_fields(params.get("response_fields"))
    dialect = session.get_bind().dialect.name
    conditions = [_visible(requester)]
    touches_results = False
    filtered = False
    text = params.get("filter")
    if text is not None and text.strip():
        try:
            condition, filter_warnings = parse_filter(text, dialect)
        except FilterError as bad:
            raise OptimadeError(400, str(bad)) from bad
        except FilterNotSupported as unsupported:
            raise OptimadeError(501, str(unsupported)) from unsupported
        conditions.append(condition)
        filtered = True
        warnings += [_warning(w) for w in filter_warnings]
        touches_results = any(name in text for name in RESULT_FIELDS) or (
            f"{PREFIX}properties" in text
        )
    order, sorts_results = _sort_columns(params.get("sort"))
    if touches_results or sorts_results:
        # Results of records under a running embargo are withheld: never filter or sort on them.
        conditions.append(access_filter(requester, Purpose.ARTIFACTS))
    where = and_(*conditions)
    offset = _positive_int(request, "page_offset", 0) or 0
    cursor = params.get("page_cursor")
    state: dict[str, Any] = {}
    page = select(Record.record_id).where(where)
    if cursor:
        state = _decode_cursor(cursor)
        if "after" in state and order:
            raise OptimadeError(400, "page_cursor: issued for another sort order")
        if "after" in state:
            page = page.where(Record.record_id > state["after"])
        else:
            offset = state["offset"]
    # A filtered first page counts its matches in the same pass that finds the page (a window
    # count over the ids), then reads the documents of that page only.
    counting = not ({"returned", "after"} & set(state)) and (filtered or sorts_results)
    if counting:
        page = page.add_columns(func.count().over().label("matches"))
    page = page.order_by(*order, Record.record_id)
    if order or offset:
        page = page.offset(offset)
    found = session.execute(page.limit(limit + 1)).all()
    more = len(found) > limit
    ids = [row.record_id for row in found[:limit]]
    by_id = {
        row.record_id: row
        for row in session.execute(
            select(Record.record_id, Record.document, Record.created_at).where(
                Record.record_id.in_(ids)
            )
        )
    }
    rows = [by_id[record_id] for record_id in ids]
    withheld = _withheld(session, requester, ids)
    data = [_entry(row, row.record_id in withheld, fields) for row in rows]
    available = _available(session, requester)
    if "returned" in state:
        returned = state["returned"]  # counted for the first page, carried by the cursor
    elif counting and found:
        returned = found[0].matches
    elif not more and not cursor and (rows or not offset):
        returned = offset + len(rows)  # the last page: everything before it, and this page
    elif not filtered and not sorts_results:
        returned = available
    else:  # an offset past the last match, or a cursor without the count
        returned = session.scalar(select(func.count(Record.record_id)).where(where)) or 0
    links: dict[str, Any] = {"next": None}
    if more:
        if order or offset:
            next_state: dict[str, Any] = {"offset": offset + limit, "returned": returned}
        else:
            next_state = {"after": rows[-1].record_id, "returned": returned}
        query = {k: v for k, v in params.items() if k not in ("page_cursor", "page_offset")}
        query["page_cursor"] = _encode_cursor(next_state)
        links["next"] = f"{_base_url(request, settings)}{BASE}/structures?{urlencode(query)}"
    meta = _meta(
        request, more_data_available=more, data_returned=returned, data_available=available
    )
    if warnings:
        meta["warnings"] = warnings
    return JSONResponse({"data": data, "links": links, "meta": meta})


@router.get("/v1/structures/{entry_id}")
def structure(
    entry_id: str, request: Request, session: SessionDep, requester: RequesterDep
) -> dict[str, Any]:
    """One structure by id (404 when it does not exist or is not visible)."""
    warnings = _check_parameters(request)
    fields = _response_fields(request.query_params.get("response_fields"))
    row = session.execute(
        select(Record.record_id, Record.document, Record.created_at).where(
            Record.record_id == entry_id, _visible(requester)
        )
    ).first()
    if row is None:
        raise OptimadeError(404, f"structures/{entry_id}: no such structure")
    withheld = _withheld(session, requester, [row.record_id])
    meta = _meta(request, data_returned=1, data_available=1)
    if warnings:
        meta["warnings"] = warnings
    return {"data": _entry(row, bool(withheld), fields), "meta": meta, "links": {"next": None}}


@router.get("/{version}/{rest:path}", include_in_schema=False)
def unsupported_version(version: str, rest: str) -> None:
    """Versions other than v1 are not served (553); unknown v1 paths are 404."""
    if version == "v1":
        raise OptimadeError(404, f"{BASE}/{rest}: no such endpoint")
    raise OptimadeError(553, f"OPTIMADE version {version!r} is not served; use v1")
