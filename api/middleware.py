"""Pure ASGI middleware: request metrics, and a guard on request bodies."""

from __future__ import annotations

import time
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.metrics import Metrics

_JSON_TYPES = ("application/json",)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media in _JSON_TYPES or (media.startswith("application/") and media.endswith("+json"))


class MetricsMiddleware:
    """Counts requests and times them by route template (``/documents/{doc_id}``).

    Requests that match no route are labelled ``unmatched``, so random paths cannot
    blow up the number of series.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route: Any = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(method=method, route=label, status=str(status)).inc()
            self.metrics.latency.labels(method=method, route=label).observe(
                time.perf_counter() - started
            )


class BodyGuardMiddleware:
    """Checks request bodies before any route sees them.

    - over ``max_bytes`` (by Content-Length, or counted while reading): 413;
    - a Content-Length that is not a number: 400;
    - a non-empty body whose Content-Type is not JSON: 415;
    - a JSON body that is not UTF-8: 400.

    Each answer is JSON with a ``detail`` that says what to change. The body is read
    once here and handed on unchanged.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await self._reject(scope, receive, send, 400, "Content-Length is not a number")
                return
            if int(declared) > self.max_bytes:
                await self._reject(scope, receive, send, 413, self._too_large(int(declared)))
                return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._reject(scope, receive, send, 413, self._too_large(size, counted=True))
                return
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        body = b"".join(chunks)
        if body:
            content_type = _header(scope, b"content-type") or ""
            if not _is_json(content_type):
                got = f"Content-Type {content_type!r}" if content_type else "no Content-Type"
                await self._reject(
                    scope,
                    receive,
                    send,
                    415,
                    f"send JSON with Content-Type: application/json ({got})",
                )
                return
            try:
                body.decode("utf-8")
            except UnicodeDecodeError as exc:
                await self._reject(
                    scope, receive, send, 400, f"the body is not valid UTF-8 (byte {exc.start})"
                )
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self, size: int, *, counted: bool = False) -> str:
        size_text = f"over {self.max_bytes}" if counted else str(size)
        return (
            f"the request body is {size_text} bytes; the limit is {self.max_bytes} "
            "(send less, e.g. fewer documents per request)"
        )

    @staticmethod
    async def _reject(scope: Scope, receive: Receive, send: Send, status: int, detail: str) -> None:
        await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)
