"""The web application: one FastAPI app over one store.

:func:`create_app` wires the routers, the error handlers (OPTIMADE paths answer in
OPTIMADE's error format, the others with ``{"detail": ...}``) and the middleware: access
logs, the rate limit per token and the body-size limit.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from matdx.api import campaigns, dashboard, exports, optimade, records
from matdx.api.access_log import AccessLog
from matdx.api.limits import BodyLimit, RateLimit
from matdx.api.settings import ServiceSettings
from matdx.store.store import Store

__all__ = ["create_app"]

logger = logging.getLogger("matdx.api")


def _is_optimade(request: Request) -> bool:
    return request.url.path.startswith("/optimade")


def _validation_message(error: RequestValidationError) -> str:
    parts = []
    for problem in error.errors():
        location = ".".join(str(p) for p in problem.get("loc", ()) if p != "body")
        parts.append(f"{location}: {problem.get('msg')}")
    return "; ".join(parts) or "invalid request"


def create_app(store: Store, settings: ServiceSettings | None = None) -> FastAPI:
    """The application serving ``store``.

    Parameters
    ----------
    store
        The store to serve; the application disposes of its engine on shutdown.
    settings
        Limits (page size, body size, rate); defaults to :class:`ServiceSettings`.
    """
    settings = settings or ServiceSettings()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        store.dispose()  # after the requests in flight have finished
        logger.info("matdx service stopped: requests finished, store closed")

    app = FastAPI(
        title="matdx",
        summary="Campaigns, calculation records and their artifacts; OPTIMADE at /optimade/v1",
        version=_version(),
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.settings = settings

    @app.exception_handler(optimade.OptimadeError)
    async def _optimade_error(request: Request, error: optimade.OptimadeError) -> JSONResponse:
        return optimade.optimade_error_response(request, error.status, error.detail)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if _is_optimade(request):
            return optimade.optimade_error_response(request, error.status_code, str(error.detail))
        return JSONResponse(
            {"detail": error.detail}, status_code=error.status_code, headers=error.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        message = _validation_message(error)
        if _is_optimade(request):
            return optimade.optimade_error_response(request, 400, message)
        return JSONResponse({"detail": message}, status_code=422)

    @app.get("/healthz", tags=["service"])
    def healthz() -> dict[str, Any]:
        """The service is up and its store answers."""
        from sqlalchemy import text

        with store.transaction() as session:
            session.execute(text("SELECT 1"))
        return {"status": "ok", "backend": store.backend, "version": _version()}

    app.include_router(optimade.router)
    app.include_router(campaigns.router)
    app.include_router(records.router)
    app.include_router(exports.router)
    app.include_router(dashboard.router)
    # Outermost first in the request path: logs see every answer, limits refuse early.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RateLimit, per_minute=settings.rate_per_minute)
    app.add_middleware(AccessLog)
    return app


def _version() -> str:
    from importlib.metadata import version

    return version("matdx")
