"""The application for ``uvicorn --factory matdx.api.service:app`` (several workers behind a
reverse proxy): the store from ``$MATDX_HOME`` / ``$MATDX_STORE``, limits from
``$MATDX_MAX_PAGE``, ``$MATDX_MAX_BODY``, ``$MATDX_RATE`` and ``$MATDX_BASE_URL``; the
dashboard's Chart.js from ``$MATDX_CHART_JS``."""

from __future__ import annotations

import os

from fastapi import FastAPI

from matdx.api.app import create_app
from matdx.api.settings import ServiceSettings
from matdx.store.store import Store

__all__ = ["app"]


def _integer(name: str, default: int) -> int:
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError as err:
        raise ValueError(f"${name}: {text!r} is not an integer") from err


def app() -> FastAPI:
    """A new application over the store the environment names."""
    defaults = ServiceSettings()
    settings = ServiceSettings(
        max_page=_integer("MATDX_MAX_PAGE", defaults.max_page),
        max_body_bytes=_integer("MATDX_MAX_BODY", defaults.max_body_bytes),
        rate_per_minute=_integer("MATDX_RATE", defaults.rate_per_minute),
        base_url=os.environ.get("MATDX_BASE_URL") or None,
        chart_js=os.environ.get("MATDX_CHART_JS") or defaults.chart_js,
    )
    return create_app(Store(os.environ.get("MATDX_HOME") or "matdx-data"), settings)
