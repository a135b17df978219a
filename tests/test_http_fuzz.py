"""What no JSON library would send, to every POST route of a served process.

A real `distilsearch serve` on 127.0.0.1 (`conftest.serving`) gets, over one
keep-alive connection per case (http.client), bodies a JSON encoder never writes:
``NaN``, ``Infinity``, numbers beyond a float's range, 10,000-deep nesting, very long
strings, bytes that are not UTF-8, wrong content types, truncated JSON and bodies over
the size limit. No answer may be a 5xx; every 4xx must be valid JSON with a
``detail``; and after each bad request the same connection must answer a normal
search. HTTP framing itself stays well-formed (a request whose Content-Length lies
cannot be told from the next request on the connection, so any server drops it).
Every loop is bounded; only loopback is used.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SERVE_KEY, SMALL_DOCS, Server, poll_ready, serving

MAX_BODY = 131_072  # room for 10,000 nested objects (60 kB), so the parser sees them
JSON = "application/json"
DEEP = 10_000


def _over_limit_chunks() -> Iterator[bytes]:
    """A body streamed without a Content-Length, past the limit (bounded)."""
    yield b'{"query": "'
    for _ in range(MAX_BODY // 8192 + 2):
        yield b"x" * 8192
    yield b'"}'


# (case id, body, Content-Type or None for none). A callable body is streamed chunked.
BAD_BODIES: list[tuple[str, bytes | Callable[[], Iterator[bytes]], str | None]] = [
    ("k-nan", b'{"query": "cats", "k": NaN}', JSON),
    ("k-infinity", b'{"query": "cats", "k": Infinity}', JSON),
    ("k-minus-infinity", b'{"query": "cats", "k": -Infinity}', JSON),
    ("k-1e309", b'{"query": "cats", "k": 1e309}', JSON),
    ("k-minus-1e400", b'{"queries": ["cats"], "k": -1e400}', JSON),
    ("query-nan", b'{"query": NaN}', JSON),
    ("bare-nan", b"NaN", JSON),
    ("nan-in-a-list", b'{"queries": [NaN, Infinity]}', JSON),
    ("nan-in-a-document", b'{"documents": [{"id": "n", "text": "t", "title": NaN}]}', JSON),
    ("nan-extra-field", b'{"query": "cats", "extra": [1e999]}', JSON),
    ("float-of-400-digits", b'{"query": "cats", "k": 1' + b"0" * 400 + b".5}", JSON),
    ("int-of-5000-digits", b'{"query": "cats", "k": 1' + b"0" * 5000 + b"}", JSON),
    ("deep-arrays", b"[" * DEEP + b"]" * DEEP, JSON),
    ("deep-objects", b'{"a":' * DEEP + b"1" + b"}" * DEEP, JSON),
    ("deep-in-a-field", b'{"query": ' + b"[" * DEEP + b"]" * DEEP + b"}", JSON),
    ("long-query", json.dumps({"query": "x" * 100_000}).encode(), JSON),
    (
        "long-document",
        json.dumps({"documents": [{"id": "n", "text": "y" * 100_000}]}).encode(),
        JSON,
    ),
    ("long-key", b'{"' + b"q" * 100_000 + b'": "cats"}', JSON),
    ("invalid-utf8", b'{"query": "\xff\xfe\xfd"}', JSON),
    ("overlong-utf8", b'{"query": "\xc0\xaf"}', JSON),
    ("utf8-surrogate", b'{"query": "\xed\xa0\x80"}', JSON),
    ("escaped-surrogate", b'{"query": "\\ud800", "mode": "\\udfff"}', JSON),
    ("raw-nul", b'{"query": "\x00"}', JSON),
    ("escaped-nul", b'{"query": "\\u0000"}', JSON),
    ("zero-width-query", '{"query": "\u200b\u200c\u2060"}'.encode(), JSON),
    ("zero-width-batch", '{"queries": [" \u200b ", "\ufeff"]}'.encode(), JSON),
    ("text-plain", b'{"query": "cats"}', "text/plain"),
    ("form", b"query=cats&k=3", "application/x-www-form-urlencoded"),
    (
        "multipart",
        b"--b\r\nContent-Disposition: form-data; name=q\r\n\r\nx\r\n--b--",
        "multipart/form-data; boundary=b",
    ),
    ("no-content-type", b'{"query": "cats"}', None),
    ("json-latin1", b'{"query": "caf\xe9"}', "application/json; charset=latin-1"),
    ("form-as-json", b"query=cats&k=3", JSON),
    ("truncated-object", b'{"query": "cats", "k": ', JSON),
    ("truncated-string", b'{"query": "ca', JSON),
    ("truncated-array", b"[", JSON),
    ("trailing-garbage", b'{"query": "cats"} trailing', JSON),
    ("duplicate-keys", b'{"query": "cats", "query": NaN}', JSON),
    ("null", b"null", JSON),
    ("a-number", b"1e5", JSON),
    ("oversized", b'{"query": "' + b"x" * MAX_BODY + b'"}', JSON),
    ("oversized-chunked", _over_limit_chunks, JSON),
]


@pytest.fixture(scope="module")
def server(
    distilsearch_cmd: list[str],
    tiny_index: Callable[..., Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("fuzz-served")
    index = tiny_index(SMALL_DOCS, folder / "idx", bm25=True)
    limits = {"DISTILSEARCH_MAX_BODY_BYTES": str(MAX_BODY), "DISTILSEARCH_MAX_DOC_CHARS": "1000"}
    with serving(distilsearch_cmd, index, folder / "serve.log", **limits) as running:
        poll_ready(running)
        yield running


@pytest.fixture(scope="module")
def post_routes(server: Server) -> list[str]:
    """Every POST route the server publishes, so that a new one is fuzzed too."""
    with server.client() as client:
        paths = client.get("/openapi.json").json()["paths"]
    routes = sorted(path for path, ops in paths.items() if "post" in ops)
    assert {"/search", "/search/batch", "/documents", "/admin/reload"} <= set(routes)
    return routes


def _strict_json(text: str) -> Any:
    """`text` parsed as standard JSON: no NaN or Infinity."""

    def refuse(name: str) -> None:
        raise ValueError(f"{name} in a response body")

    return json.loads(text, parse_constant=refuse)


def _exchange(
    conn: http.client.HTTPConnection,
    path: str,
    body: bytes | Iterator[bytes],
    content_type: str | None,
) -> tuple[int, str, str]:
    """One request on `conn`: ``(status, Content-Type, body text)``."""
    headers = {"X-API-Key": SERVE_KEY}
    if content_type is not None:
        headers["Content-Type"] = content_type
    chunked = not isinstance(body, bytes)
    conn.request("POST", path, body=body, headers=headers, encode_chunked=chunked)
    response = conn.getresponse()
    text = response.read().decode("utf-8")
    return response.status, response.getheader("Content-Type", ""), text


def _search_still_answers(conn: http.client.HTTPConnection) -> None:
    body = json.dumps({"query": "young cat", "k": 2, "mode": "bm25"}).encode()
    status, _, text = _exchange(conn, "/search", body, JSON)
    assert status == 200, text
    assert [h["id"] for h in _strict_json(text)["hits"]] == ["d3", "d1"]


def _server_errors(server: Server) -> tuple[float, int]:
    """5xx answers counted so far (but /ready's 503s while the index loaded), and the
    length of the server's log, read on a new connection to a ready server."""
    with server.client() as client:
        assert client.get("/ready").status_code == 200
        metrics = client.get("/metrics").text
    counted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("distilsearch_http_requests_total{")
        and 'status="5' in line
        and 'route="/ready"' not in line
    )
    return counted, len(server.log_text())


@pytest.mark.parametrize(
    "body, content_type", [case[1:] for case in BAD_BODIES], ids=[case[0] for case in BAD_BODIES]
)
def test_bad_bodies_get_a_json_4xx_and_the_connection_stays_open(
    server: Server,
    post_routes: list[str],
    body: bytes | Callable[[], Iterator[bytes]],
    content_type: str | None,
) -> None:
    errors_before, log_before = _server_errors(server)
    host, port = server.address
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.connect()
    sock = conn.sock
    try:
        for path in post_routes:
            sent = body if isinstance(body, bytes) else body()
            status, media, text = _exchange(conn, path, sent, content_type)
            assert status < 500, f"{path}: {status} {text[:300]}"
            if status >= 400:
                assert media == "application/json", f"{path}: {status} {media}"
                detail = _strict_json(text)["detail"]
                assert detail, f"{path}: {status} {text[:300]}"
            assert conn.sock is sock, f"{path}: the server closed the connection after {status}"
            _search_still_answers(conn)
            assert conn.sock is sock, f"{path}: the server closed the connection"
    finally:
        conn.close()
    errors_after, _ = _server_errors(server)  # the process still answers, on a new connection
    assert errors_after == errors_before
    log = server.log_text()[log_before:]
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-3000:]
