"""The uvicorn factory (``matdx.api.service:app``) reads the store and limits from the
environment, and refuses a malformed limit by name."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from matdx.api.service import app


def test_the_factory_serves_the_environments_store(home, monkeypatch):
    monkeypatch.setenv("MATDX_MAX_PAGE", "5")
    monkeypatch.setenv("MATDX_RATE", "0")
    made = app()
    with TestClient(made) as http:
        assert http.get("/healthz").json()["status"] == "ok"
        answer = http.get("/optimade/v1/structures?page_limit=6")
        assert answer.status_code == 403 and "maximum of 5" in answer.json()["errors"][0]["detail"]


def test_a_malformed_limit_is_refused_by_name(home, monkeypatch):
    monkeypatch.setenv("MATDX_RATE", "many")
    with pytest.raises(ValueError, match=r"\$MATDX_RATE: 'many'"):
        app()
