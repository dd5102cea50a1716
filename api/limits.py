"""Request limits as ASGI middleware: body size and a rate per token.

Both refuse before a route runs, so a refused request writes nothing.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from typing import Any

__all__ = ["BodyLimit", "RateLimit"]

Scope = dict[str, Any]


async def _refuse(send: Any, status: int, detail: str, headers: list | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413: by their Content-Length at once, and
    while they stream in when the length is not declared (chunked)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        message = f"request body larger than the limit of {self.max_bytes} bytes"
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await _refuse(send, 400, "Content-Length is not a number")
                return
            if length > self.max_bytes:
                await _refuse(send, 413, message)
                return
        received = 0
        started = False

        async def send_tracked(event: dict[str, Any]) -> None:
            nonlocal started
            if event["type"] == "http.response.start":
                started = True
            await send(event)

        async def receive_limited() -> dict[str, Any]:
            nonlocal received
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return event

        try:
            await self.app(scope, receive_limited, send_tracked)
        except _TooLarge:
            if not started:
                await _refuse(send, 413, message)


class _TooLarge(Exception):
    """The request body grew past the limit while it was being read."""


class RateLimit:
    """At most ``per_minute`` requests in any 60 s window per client key: the token's id
    for authenticated requests, the client address for anonymous ones. 429 with
    ``Retry-After`` beyond. ``/healthz`` is not counted."""

    WINDOW_S = 60.0

    def __init__(self, app: Any, per_minute: int) -> None:
        self.app = app
        self.per_minute = per_minute
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(scope: Scope) -> str:
        headers = dict(scope.get("headers") or [])
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        _, _, token = authorization.partition(" ")
        if token.startswith("mdx_"):
            return "token:" + token[4:16]
        client = scope.get("client") or ("unknown", 0)
        return f"address:{client[0]}"

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.per_minute <= 0 or scope["path"] == "/healthz":
            await self.app(scope, receive, send)
            return
        key = self.key(scope)
        now = time.monotonic()
        with self._lock:
            window = self._seen.setdefault(key, deque())
            while window and window[0] <= now - self.WINDOW_S:
                window.popleft()
            over = len(window) >= self.per_minute
            if not over:
                window.append(now)
            retry = int(window[0] + self.WINDOW_S - now) + 1 if over else 0
        if over:
            await _refuse(
                send,
                429,
                f"rate limit: more than {self.per_minute} requests per minute; retry in {retry} s",
                [(b"retry-after", str(retry).encode())],
            )
            return
        await self.app(scope, receive, send)
