"""Structured access logs: one JSON object per request on the ``matdx.api.access`` logger."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

__all__ = ["AccessLog"]

logger = logging.getLogger("matdx.api.access")


class AccessLog:
    """Log method, path, query, status, duration (ms), response bytes, client address and the
    token id (never the secret) of every request."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        size = 0

        async def send_logged(event: dict[str, Any]) -> None:
            nonlocal status, size
            if event["type"] == "http.response.start":
                status = event["status"]
            elif event["type"] == "http.response.body":
                size += len(event.get("body", b""))
            await send(event)

        try:
            await self.app(scope, receive, send_logged)
        finally:
            headers = dict(scope.get("headers") or [])
            _, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
            client = scope.get("client") or ("", 0)
            logger.info(
                json.dumps(
                    {
                        "method": scope.get("method"),
                        "path": scope.get("path"),
                        "query": scope.get("query_string", b"").decode("latin-1")[:500],
                        "status": status,
                        "ms": round((time.perf_counter() - started) * 1000, 2),
                        "bytes": size,
                        "client": client[0],
                        "token": token[4:16] if token.startswith("mdx_") else None,
                    }
                )
            )
