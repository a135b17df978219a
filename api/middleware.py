"""Pure ASGI middleware: request metrics, and a guard on request bodies."""

from __future__ import annotations

import json
import math
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


class _NotFinite(Exception):
    """A number that is not finite: NaN, Infinity, or one too large for a float (1e309)."""


def _refuse_constant(name: str) -> float:
    raise _NotFinite(
        f"{name} is not a JSON number (JSON has no NaN or Infinity); send a finite number or null",
        name,
    )


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(
            f"{text[:40]} is beyond the range of a 64-bit float (it reads as infinity); "
            "send a number between -1.7e308 and 1.7e308",
            text[:80],
        )
    return value


def _body_error(msg: str, value: str) -> list[dict[str, Any]]:
    """A 422 detail shaped like FastAPI's own for malformed JSON."""
    return [{"type": "json_invalid", "loc": ["body"], "msg": msg, "input": value}]


def json_problem(text: str) -> list[dict[str, Any]] | None:
    """Why the JSON body `text` cannot be taken, as a 422 detail; None when it can.

    Python's parser takes ``NaN``, ``Infinity`` and ``-Infinity``, which standard
    JSON (RFC 8259) does not have, and reads numbers beyond a float's range
    (``1e309``) as infinities. Those are refused here, for every route at once: no
    model downstream may see one, and none could be echoed in a JSON error. So are
    a body nested too deeply to parse and an integer too long to read. Malformed
    JSON is left to FastAPI, whose 422 gives the position of the error.
    """
    try:
        json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except _NotFinite as exc:
        return _body_error(*exc.args)
    except RecursionError:
        return _body_error(
            "the body nests arrays or objects too deeply to read; send flatter JSON", text[:80]
        )
    except json.JSONDecodeError:
        return None
    except ValueError:  # an integer of more than 4300 digits (sys.get_int_max_str_digits)
        return _body_error(
            "the body holds an integer too long to read (over 4300 digits); send a shorter number",
            text[:80],
        )
    return None


def _body_refusal(content_type: str, body: bytes) -> tuple[int, str | list[Any]] | None:
    """``(status, detail)`` for a non-empty body that is not JSON (415), not UTF-8
    (400) or not JSON a route may take (422, `json_problem`); None when it may pass."""
    if not _is_json(content_type):
        got = f"Content-Type {content_type!r}" if content_type else "no Content-Type"
        return 415, f"send JSON with Content-Type: application/json ({got})"
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return 400, f"the body is not valid UTF-8 (byte {exc.start})"
    problem = json_problem(text)
    return None if problem is None else (422, problem)


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
    - a JSON body that is not UTF-8: 400;
    - a JSON body that holds a number standard JSON cannot (``NaN``, ``Infinity``,
      ``1e309``) or nests too deeply to parse: 422 (`json_problem`).

    Each answer is JSON with a ``detail`` that says what to change, and the
    connection stays open for the client's next request. The body is read once here
    and handed on unchanged.
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
        refusal = _body_refusal(_header(scope, b"content-type") or "", body) if body else None
        if refusal is not None:
            await self._reject(scope, receive, send, *refusal)
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
    async def _reject(
        scope: Scope, receive: Receive, send: Send, status: int, detail: str | list[Any]
    ) -> None:
        await JSONResponse({"detail": detail}, status_code=status)(scope, receive, send)


def openai_error(status: int, detail: Any) -> dict[str, Any]:
    """OpenAI's error object (``{"message", "type", "param", "code"}``) for an answer of
    `status` whose ``detail`` is this server's: a string, or pydantic-shaped errors
    (their messages joined, each after its field, ``input.1: ...``)."""
    param = None
    if isinstance(detail, list) and all(isinstance(e, dict) for e in detail):
        parts = []
        for error in detail:
            field = ".".join(str(x) for x in error.get("loc", [])[1:])
            param = param or field or None
            message = str(error.get("msg", "")).removeprefix("Value error, ")
            parts.append(f"{field}: {message}" if field else message)
        text = "; ".join(parts)
    else:
        text = str(detail)
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"message": text, "type": kind, "param": param, "code": None}


class OpenAIErrorMiddleware:
    """Adds OpenAI's ``error`` object beside ``detail`` in the JSON error answers of the
    routes under `prefix`, so that OpenAI's clients, which read ``error.message``,
    show what is wrong. Other answers pass unchanged."""

    def __init__(self, app: ASGIApp, prefix: str = "/v1/") -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def send_wrapper(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and int(message["status"]) >= 400:
                start = message  # held until the body is complete
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                await self._send_error(start, b"".join(chunks), send)

        await self.app(scope, receive, send_wrapper)

    @staticmethod
    async def _send_error(start: Message, body: bytes, send: Send) -> None:
        try:
            content = json.loads(body)
        except ValueError:
            content = None
        if isinstance(content, dict) and "detail" in content and "error" not in content:
            content["error"] = openai_error(int(start["status"]), content["detail"])
            body = json.dumps(content).encode("utf-8")
            headers = [
                (k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"
            ]
            start = {**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
        await send(start)
        await send({"type": "http.response.body", "body": body, "more_body": False})
