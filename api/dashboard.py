"""``/dashboard``: a page that watches campaigns in the browser.

The page and its script are static files of this package; the charts are drawn in the browser
by Chart.js from the JSON of the REST routes (``/campaigns``, ``/campaigns/{id}/timeline``,
``/attempts``, ``/allocation``, ``/records``). Chart.js is served from the file the settings
name (Debian's ``libjs-chart.js`` by default), so the page needs no network beyond the service.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, RedirectResponse

from matdx.api.deps import SettingsDep

__all__ = ["router"]

router = APIRouter(prefix="/dashboard", tags=["dashboard"])
STATIC = Path(__file__).with_name("static")
FILES = {
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
}


@router.get("", include_in_schema=False)
def to_page() -> RedirectResponse:
    return RedirectResponse("/dashboard/")


@router.get("/", include_in_schema=False)
def page() -> FileResponse:
    """The dashboard page (``?campaign=ID`` opens one campaign; ``?every=S`` polls every S s;
    a token is taken from ``#token=...`` and kept for the browser tab only)."""
    return FileResponse(STATIC / "dashboard.html", media_type="text/html")


@router.get("/static/chart.js", include_in_schema=False, name="chart_js")
def chart_js(settings: SettingsDep) -> FileResponse:
    path = Path(settings.chart_js)
    if not path.is_file():
        raise HTTPException(
            503,
            f"Chart.js not found at {path}: install Debian's libjs-chart.js or set "
            "$MATDX_CHART_JS to a chart.umd/chart.min.js file",
        )
    return FileResponse(path, media_type="text/javascript")


@router.get("/static/{name}", include_in_schema=False)
def static_file(name: str) -> FileResponse:
    if name not in FILES:
        raise HTTPException(404, f"{name!r}: not a file of the dashboard")
    return FileResponse(STATIC / name, media_type=FILES[name])
