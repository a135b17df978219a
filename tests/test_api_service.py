"""The search service over HTTP: modes, batches, documents, admin, metrics, limits.

Real FastAPI app, real FAISS index and BM25 index, the tiny random model.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SMALL_DOCS as DOCS
from fastapi.testclient import TestClient
from pydantic import ValidationError

from api.app import create_app
from api.settings import Settings

KEY = "test-key-0123456789abcdef"


@pytest.fixture(scope="module")
def index_dir(tiny_index: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_index(DOCS, tmp_path_factory.mktemp("svc") / "idx", bm25=True)


def strict_settings(index_dir: Path) -> Settings:
    """Small limits, so that requests over them are cheap to send; an API key."""
    settings = Settings(index_dir=index_dir, max_k=5, max_batch_queries=3, api_key=KEY)
    return settings.model_copy(update={"max_query_chars": 80, "max_body_bytes": 4096})


@pytest.fixture(scope="module")
def client(index_dir: Path) -> Iterator[TestClient]:
    with TestClient(create_app(strict_settings(index_dir))) as c:
        yield c


@pytest.fixture(scope="module")
def plain_client(
    tiny_index: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    """No BM25 index, no API key, defaults."""
    idx = tiny_index(DOCS, tmp_path_factory.mktemp("plain") / "idx", bm25=False)
    with TestClient(create_app(Settings(index_dir=idx))) as c:
        yield c


def ids(body: dict) -> list[str]:
    return [h["id"] for h in body["hits"]]


# --- searching -------------------------------------------------------------------


def test_dense_finds_the_document_itself(client: TestClient) -> None:
    r = client.post(
        "/search",
        json={"query": "Cats Cats are small domesticated felines that purr.", "mode": "dense"},
    )
    body = r.json()
    assert r.status_code == 200 and body["mode"] == "dense" and ids(body)[0] == "d1"
    assert body["hits"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert body["timing"]["batch_size"] >= 1 and body["timing"]["encode_ms"] > 0


def test_bm25_matches_keywords_only(client: TestClient) -> None:
    body = client.post("/search", json={"query": "programming language", "mode": "bm25"}).json()
    # d5 and d6 hold both terms; d8's "programs" shares the stem of "programming".
    assert set(ids(body)[:2]) == {"d5", "d6"} and ids(body)[2:] == ["d8"]
    assert all(h["score"] > 0 for h in body["hits"]) and body["timing"]["bm25_ms"] > 0


def test_hybrid_fuses_both(client: TestClient) -> None:
    body = client.post(
        "/search", json={"query": "programming language", "mode": "hybrid", "k": 5}
    ).json()
    assert len(body["hits"]) == 5
    assert set(ids(body)[:2]) == {"d5", "d6"}  # the keyword matches lead; dense fills in
    scores = [h["score"] for h in body["hits"]]
    assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1.0


def test_the_default_mode_is_hybrid_where_the_index_has_bm25(
    client: TestClient, plain_client: TestClient
) -> None:
    query = {"query": "programming language", "k": 5}
    hybrid = client.post("/search", json={**query, "mode": "hybrid"}).json()
    batch = client.post("/search/batch", json={"queries": [query["query"]], "k": 5}).json()
    for body in (
        client.post("/search", json=query).json(),
        client.get("/search", params={"q": query["query"], "k": 5}).json(),
        batch["results"][0],
    ):
        assert body["mode"] == "hybrid" and body["hits"] == hybrid["hits"]
    assert client.get("/info").json()["default_mode"] == "hybrid"
    dense = plain_client.post("/search", json=query).json()
    assert dense["mode"] == "dense" and plain_client.get("/info").json()["default_mode"] == "dense"
    assert ids(dense) == ids(plain_client.post("/search", json={**query, "mode": "dense"}).json())


def test_get_search_equals_post(client: TestClient) -> None:
    for mode in ("dense", "bm25", "hybrid"):
        got = client.get("/search", params={"q": "young dog training", "k": 3, "mode": mode})
        posted = client.post("/search", json={"query": "young dog training", "k": 3, "mode": mode})
        assert got.status_code == 200 and ids(got.json()) == ids(posted.json())


def test_batch_search(client: TestClient) -> None:
    r = client.post("/search/batch", json={"queries": ["cats", "rust", "compiler"], "k": 2})
    body = r.json()
    assert r.status_code == 200 and [x["query"] for x in body["results"]] == [
        "cats",
        "rust",
        "compiler",
    ]
    assert all(len(x["hits"]) == 2 for x in body["results"])
    hybrid = client.post("/search/batch", json={"queries": ["rust"], "mode": "hybrid"}).json()
    assert ids(hybrid["results"][0])[0] == "d6"


def test_documents(client: TestClient) -> None:
    assert client.get("/documents/d3").json() == {
        "id": "d3",
        "title": "Kittens",
        "text": "A kitten is a young cat; kittens play a lot.",
    }
    r = client.get("/documents/nope/with/slash")
    assert r.status_code == 404 and "nope/with/slash" in r.json()["detail"]


def test_no_bm25_index_is_a_clear_400(plain_client: TestClient) -> None:
    for mode in ("bm25", "hybrid"):
        r = plain_client.post("/search", json={"query": "cats", "mode": mode})
        assert r.status_code == 400
        assert "no BM25 index" in r.json()["detail"] and "dense" in r.json()["detail"]
    assert plain_client.post("/search", json={"query": "cats"}).status_code == 200
    assert plain_client.get("/info").json()["bm25"]["available"] is False


# --- bad input ---------------------------------------------------------------------

LONG = "x" * 81


BAD_REQUESTS = [
    ("post", "/search", {"json": {"query": ""}}, 422, "at least 1 character"),
    ("post", "/search", {"json": {"query": " \t\n "}}, 422, "whitespace"),
    ("post", "/search", {"json": {"query": LONG}}, 422, "the limit is 80"),
    ("post", "/search", {"json": {"query": "x", "k": 0}}, 422, "greater than or equal to 1"),
    ("post", "/search", {"json": {"query": "x", "k": -3}}, 422, "greater than or equal to 1"),
    ("post", "/search", {"json": {"query": "x", "k": 6}}, 422, "over the limit 5"),
    ("post", "/search", {"json": {"query": "x", "k": "5"}}, 422, "valid integer"),
    ("post", "/search", {"json": {"query": "x", "k": 2.5}}, 422, "valid integer"),
    ("post", "/search", {"json": {"query": ["x"]}}, 422, "valid string"),
    (
        "post",
        "/search",
        {"json": {"query": "x", "mode": "fuzzy"}},
        422,
        "'dense', 'bm25' or 'hybrid'",
    ),
    ("post", "/search", {"json": {"query": "x", "extra": 1}}, 422, "Extra inputs"),
    ("post", "/search", {"json": [1, 2]}, 422, "valid dictionary"),
    (
        "post",
        "/search",
        {"content": b"{not json", "headers": {"content-type": "application/json"}},
        422,
        "JSON decode error",
    ),
    (
        "post",
        "/search",
        {"content": b'{"query": "x"}', "headers": {"content-type": "text/plain"}},
        415,
        "application/json",
    ),
    (
        "post",
        "/search",
        {"content": b'{"query": "x"}', "headers": {"content-type": ""}},
        415,
        "application/json",
    ),
    (
        "post",
        "/search",
        {"content": b'{"query": "\xff\xfe"}', "headers": {"content-type": "application/json"}},
        400,
        "UTF-8",
    ),
    (
        "post",
        "/search",
        {
            "content": b'{"query": "\\ud800 cat"}',
            "headers": {"content-type": "application/json"},
        },
        422,
        "unicode string",
    ),
    (
        "post",
        "/search",
        {
            "content": b'{"query": "x", "mode": "\\udfff"}',
            "headers": {"content-type": "application/json"},
        },
        422,
        "\\ufffd",
    ),
    (
        "post",
        "/search",
        {"json": {"query": " \u200b\u200c\u2060\ufeff "}},
        422,
        "invisible characters",
    ),
    (
        "post",
        "/search",
        {"content": b'{"query": "x", "k": NaN}', "headers": {"content-type": "application/json"}},
        422,
        "NaN is not a JSON number",
    ),
    (
        "post",
        "/search/batch",
        {
            "content": b'{"queries": ["x"], "k": -Infinity}',
            "headers": {"content-type": "application/json"},
        },
        422,
        "-Infinity is not a JSON number",
    ),
    (
        "post",
        "/search",
        {"content": b'{"query": "x", "k": 1e309}', "headers": {"content-type": "application/json"}},
        422,
        "1e309 is beyond the range of a 64-bit float",
    ),
    (
        "post",
        "/search",
        {"content": b"[" * 2000 + b"]" * 2000, "headers": {"content-type": "application/json"}},
        422,
        "nests arrays or objects too deeply",
    ),
    ("post", "/search", {"json": {"query": "x" * 5000}}, 413, "limit is 4096"),
    (
        "post",
        "/search",
        {
            "chunks": [b"{", b" " * 5000, b"}"],  # streamed: no content-length
            "headers": {"content-type": "application/json"},
        },
        413,
        "limit is 4096",
    ),
    ("get", "/search", {"params": {"q": ""}}, 422, "at least 1 character"),
    ("get", "/search", {"params": {"q": "   "}}, 422, "whitespace"),
    ("get", "/search", {"params": {"q": "\u200b\u00ad\u2060"}}, 422, "invisible characters"),
    ("get", "/search", {"params": {"q": "x", "k": "ten"}}, 422, "valid integer"),
    ("get", "/search", {"params": {"q": "x", "k": 99}}, 422, "over the limit 5"),
    (
        "get",
        "/search",
        {"params": {"q": "x", "mode": "DENSE"}},
        422,
        "'dense', 'bm25' or 'hybrid'",
    ),
    ("get", "/search", {}, 422, "Field required"),
    (
        "post",
        "/search/batch",
        {"json": {"queries": ["a", "b", "c", "d"]}},
        422,
        "the limit is 3",
    ),
    ("post", "/search/batch", {"json": {"queries": []}}, 422, "at least 1 item"),
    ("post", "/search/batch", {"json": {"queries": ["ok", " "]}}, 422, "whitespace"),
    ("get", "/documents/missing", {}, 404, "no document with id 'missing'"),
    ("get", "/no/such/route", {}, 404, "Not Found"),
    ("put", "/search", {"json": {"query": "x"}}, 405, "Method Not Allowed"),
]


def send(client: TestClient, method: str, url: str, kwargs: dict) -> Any:
    """One request of `BAD_REQUESTS` (``chunks``: a body streamed from a fresh iterator)."""
    kwargs = dict(kwargs)
    if "chunks" in kwargs:
        kwargs["content"] = iter(kwargs.pop("chunks"))
    return getattr(client, method)(url, **kwargs)


@pytest.mark.parametrize("method, url, kwargs, status, fragment", BAD_REQUESTS)
def test_bad_input_is_a_4xx_with_detail(
    client: TestClient, method: str, url: str, kwargs: dict, status: int, fragment: str
) -> None:
    r = send(client, method, url, kwargs)
    assert r.status_code == status, r.text
    assert fragment in json.dumps(r.json()["detail"]), r.text


def test_odd_bytes_in_the_url_are_replaced_not_an_error(client: TestClient) -> None:
    # Percent-escapes that are not UTF-8 decode to U+FFFD; the NUL is a character. What
    # is left to match is the word "cat".
    r = client.get("/search?q=%FF%FE%00cat&k=2&mode=bm25")
    assert r.status_code == 200, r.text
    assert r.json()["query"] == "\ufffd\ufffd\x00cat"
    cat = client.get("/search", params={"q": "cat", "k": 2, "mode": "bm25"}).json()
    assert ids(r.json()) == ids(cat) and len(ids(cat)) == 2
    r = client.get("/documents/%FF%00")
    assert r.status_code == 404 and r.json()["detail"] == "no document with id '\ufffd\\x00'"


def test_no_bad_request_reaches_the_server_error_handler(index_dir: Path) -> None:
    """Every bad request, on an app of its own: each is counted as a 4xx, none as a 5xx."""
    with TestClient(create_app(strict_settings(index_dir))) as fresh:
        for method, url, kwargs, status, _ in BAD_REQUESTS:
            assert send(fresh, method, url, kwargs).status_code == status, (method, url)
        text = fresh.get("/metrics").text
    counted: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("distilsearch_http_requests_total{"):
            status = line.split('status="')[1][:3]
            counted[status[0]] = counted.get(status[0], 0.0) + float(line.rsplit(" ", 1)[1])
    assert counted == {"4": len(BAD_REQUESTS)}, counted


def test_catch_all_handler_answers_json(index_dir: Path) -> None:
    app = create_app(Settings(index_dir=index_dir))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/boom")
    assert r.status_code == 500 and "server log" in r.json()["detail"]
    assert "secret" not in r.text


def test_echoed_input_json_cannot_hold_is_written_as_text(index_dir: Path) -> None:
    """A check that echoes a number JSON cannot hold still answers a JSON 422."""
    from api.validation import invalid

    app = create_app(Settings(index_dir=index_dir))

    @app.get("/odd")
    async def odd() -> None:
        raise invalid(("query", "x"), "not a finite number", [float("nan"), float("-inf")])

    with TestClient(app) as c:
        r = c.get("/odd")
    assert r.status_code == 422
    (error,) = json.loads(r.text, parse_constant=lambda name: pytest.fail(name))["detail"]
    assert error["input"] == ["NaN", "-Infinity"] and error["msg"] == "not a finite number"


# --- admin -------------------------------------------------------------------------


def test_admin_needs_the_key(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    r = client.post("/admin/reload")
    assert r.status_code == 401 and "X-API-Key" in r.json()["detail"]
    r = client.post("/admin/reload", headers={"X-API-Key": KEY[:-1] + "X"})
    assert r.status_code == 403 and r.json()["detail"] == "wrong API key"
    r = client.delete("/documents/d1", headers={"X-API-Key": "nope"})
    assert r.status_code == 403
    r = client.post("/documents", json={"documents": []})
    assert r.status_code == 401  # the key is checked before the body
    assert KEY not in caplog.text and KEY[:-1] not in caplog.text


def test_admin_is_off_without_a_key(plain_client: TestClient) -> None:
    r = plain_client.post("/admin/reload", headers={"X-API-Key": "anything-at-all-here"})
    assert r.status_code == 403 and "DISTILSEARCH_API_KEY" in r.json()["detail"]


def test_reload_under_load_fails_no_request(client: TestClient) -> None:
    before = client.get("/ready").json()["generation"]
    service = client.app.state.service  # type: ignore[attr-defined]
    old = service.holder.current
    statuses: list[int] = []
    errors: list[str] = []
    spans: list[tuple[float, float]] = []  # (start, end) of every search
    stop = threading.Event()
    searching = threading.Barrier(4, timeout=60)  # three searchers and this thread

    def hammer(n: int) -> None:
        for i in range(2000):  # bounded; `stop` ends it once the reloads are done
            mode = ("dense", "bm25", "hybrid")[(i + n) % 3]
            t0 = time.perf_counter()
            try:
                r = client.post("/search", json={"query": "young cat", "mode": mode})
            except Exception as exc:  # the app raised (TestClient re-raises it)
                statuses.append(-1)
                errors.append(repr(exc))
            else:
                statuses.append(r.status_code)
                if r.status_code != 200:
                    errors.append(r.text)
            spans.append((t0, time.perf_counter()))
            if i == 0:
                searching.wait()
            if stop.is_set():
                return

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    reloads = []
    try:
        searching.wait()  # every searcher is running: the reloads land among searches
        for _ in range(3):
            t0 = time.perf_counter()
            r = client.post("/admin/reload", headers={"X-API-Key": KEY})
            reloads.append((t0, time.perf_counter()))
            assert r.status_code == 200 and r.json()["bm25"] is True
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert statuses and set(statuses) == {200}, errors[:3]
    for r0, r1 in reloads:  # searches ran during each reload, not only around them
        assert any(s0 < r1 and s1 > r0 for s0, s1 in spans), (r0, r1)
    assert client.get("/ready").json()["generation"] == before + 3
    assert old.retired and old.leases == 0
    with pytest.raises(Exception, match="closed"):
        old.retriever.folder.store.by_id("d1")  # the old doc store was closed


def test_a_leased_engine_stays_open_until_released(client: TestClient) -> None:
    holder = client.app.state.service.holder  # type: ignore[attr-defined]
    engine = holder.acquire()
    try:
        r = client.post("/admin/reload", headers={"X-API-Key": KEY})
        assert r.status_code == 200
        assert engine.retired and engine.retriever.folder.store.by_id("d1") is not None
    finally:
        holder.release(engine)
    with pytest.raises(Exception, match="closed"):
        engine.retriever.folder.store.by_id("d1")


def test_failed_reload_keeps_the_old_index(tiny_index: Callable[..., Path], tmp_path: Path) -> None:
    idx = tiny_index(DOCS, tmp_path / "idx", bm25=False)
    with TestClient(create_app(Settings(index_dir=idx, api_key=KEY))) as c:
        (idx / "manifest.json").write_text("{broken")
        r = c.post("/admin/reload", headers={"X-API-Key": KEY})
        assert r.status_code == 409 and "still serving generation 1" in r.json()["detail"]
        assert c.post("/search", json={"query": "cats"}).status_code == 200


def test_upsert_and_delete_are_searchable_at_once(
    tiny_index: Callable[..., Path], tmp_path: Path
) -> None:
    idx = tiny_index(DOCS, tmp_path / "idx", bm25=True)
    auth = {"X-API-Key": KEY}
    settings = Settings(index_dir=idx, api_key=KEY, max_upsert_docs=2, max_doc_chars=100)
    with TestClient(create_app(settings)) as c:
        new = {"id": "d9", "title": "Ferrets", "text": "Ferrets are playful mustelids."}
        r = c.post("/documents", json={"documents": [new]}, headers=auth)
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["added"], body["replaced"], body["count"], body["generation"]) == (1, 0, 9, 2)
        assert ids(c.post("/search", json={"query": "ferrets", "mode": "bm25"}).json()) == ["d9"]
        exact = c.post(
            "/search", json={"query": "Ferrets Ferrets are playful mustelids.", "mode": "dense"}
        ).json()
        assert ids(exact)[0] == "d9"
        assert c.get("/documents/d9").json()["title"] == "Ferrets"

        changed = {"id": "d1", "title": "Cats", "text": "Cats chase laser pointers."}
        body = c.post("/documents", json={"documents": [changed]}, headers=auth).json()
        assert (body["added"], body["replaced"], body["count"]) == (0, 1, 9)
        assert ids(c.post("/search", json={"query": "laser", "mode": "bm25"}).json()) == ["d1"]

        r = c.delete("/documents/d9", headers=auth)
        assert r.status_code == 200 and r.json()["deleted"] == 1 and r.json()["count"] == 8
        assert c.get("/documents/d9").status_code == 404
        assert c.post("/search", json={"query": "ferrets", "mode": "bm25"}).json()["hits"] == []
        assert c.delete("/documents/d9", headers=auth).status_code == 404
        assert c.get("/ready").json()["generation"] == 4
        long = {**new, "text": "x" * 101}

        twice = [new, {**new, "title": "Polecats"}]  # a repeated id: the last one wins
        body = c.post("/documents", json={"documents": twice}, headers=auth).json()
        assert body["added"] == 1 and c.get("/documents/d9").json()["title"] == "Polecats"

        for docs, fragment in [
            ([new, {**new, "id": "x"}, {**new, "id": "y"}], "the limit is 2"),
            ([{**new, "text": ""}], "at least 1 character"),
            ([long], "text is 101 characters; the limit is 100"),
            ([{**new, "id": 5}], "valid string"),
        ]:
            r = c.post("/documents", json={"documents": docs}, headers=auth)
            assert r.status_code == 422 and fragment in json.dumps(r.json()["detail"])


def _spoil_doc_store(idx: Path) -> None:
    """Replace the doc store on disk with bytes SQLite cannot read. A served index keeps
    the file it opened; a writer's copy of the folder gets these bytes."""
    from search.index_folder import DOCSTORE_FILE

    bad = idx / "garbage"
    bad.write_bytes(b"this is not an SQLite database\n" * 256)
    os.replace(bad, idx / DOCSTORE_FILE)


@pytest.mark.parametrize(
    "fault, error",
    [
        ("doc-store-not-a-database", "sqlite3.DatabaseError: file is not a database"),
        ("file-name-too-long", "OSError: [Errno 36] File name too long"),
    ],
)
def test_a_storage_failure_on_update_is_a_503_that_tells_no_internals(
    tiny_index: Callable[..., Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    fault: str,
    error: str,
) -> None:
    """Real faults of the index folder under the real writer (the tests may run as
    root, whom an unwritable folder does not stop): a 503 whose detail says the
    server's storage failed, with no path and no exception text; the exception and its
    traceback in the server log; and the index served unchanged."""
    from api.service import STORAGE_FAILED

    idx = tiny_index(DOCS, tmp_path / "idx", bm25=True)
    if fault == "file-name-too-long":
        # The folder loads, but the writer's temp folder beside it, ".NAME.tmp-XXXXXXXX",
        # is longer than a file name may be (255 bytes).
        idx = idx.rename(idx.with_name("i" * 250))
    auth = {"X-API-Key": KEY}
    doc = {"id": "d9", "title": "Ferrets", "text": "Ferrets are playful mustelids."}
    with TestClient(create_app(Settings(index_dir=idx, api_key=KEY))) as c:
        if fault == "doc-store-not-a-database":
            _spoil_doc_store(idx)
        for method, url, kwargs in [
            ("POST", "/documents", {"json": {"documents": [doc]}}),
            ("DELETE", "/documents/d1", {}),
        ]:
            caplog.clear()
            r = c.request(method, url, headers=auth, **kwargs)
            assert r.status_code == 503, r.text
            assert r.json() == {"detail": STORAGE_FAILED}
            assert str(tmp_path) not in r.text and error.split(": ")[-1] not in r.text
            (record,) = [x for x in caplog.records if x.levelname == "ERROR"]
            assert record.exc_info and str(idx) in record.getMessage()
            assert error in "".join(traceback.format_exception(*record.exc_info))
        assert c.get("/ready").json()["generation"] == 1
        assert c.get("/documents/d1").status_code == 200
        assert c.get("/documents/d9").status_code == 404
        found = c.post("/search", json={"query": "cats", "mode": "bm25"}).json()
        assert ids(found)[0] == "d1"


def test_upsert_with_onnx_encoder_stays_out_of_the_query_pool(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distill.compress.export import export_onnx
    from indexer.build import build_index
    from search.encoder import load_encoder
    from search.onnx_encoder import OnnxEncoder

    monkeypatch.setattr("search.onnx_encoder.cpu_count", lambda: 2)  # a pool even on 1 core
    model = Path(shutil.copytree(tiny_model, tmp_path / "model"))
    export_onnx(model, [text for _, _, text in DOCS])
    encoder = load_encoder(model)
    assert isinstance(encoder, OnnxEncoder)
    idx = tmp_path / "idx"
    build_index(encoder, DOCS, idx, model_path=str(model), progress=False)
    settings = Settings(index_dir=idx, api_key=KEY, encode_workers=1)
    with TestClient(create_app(settings)) as c:
        docs = [{"id": f"n{i}", "title": "", "text": f"note number {i}"} for i in range(40)]
        r = c.post("/documents", json={"documents": docs}, headers={"X-API-Key": KEY})
        assert r.status_code == 200 and r.json()["added"] == 40, r.text
        served = c.app.state.service.holder.current.retriever.encoder
        assert isinstance(served, OnnxEncoder) and served.backend == "onnx"
        assert served.parallel == 2
        # Two batches of 32 ran one after another, not in the pool queries share.
        assert served._pool is None
        exact = c.post("/search", json={"query": "note number 7", "k": 1}).json()
        assert ids(exact) == ["n7"]


# --- health, info, metrics, settings ------------------------------------------------


def test_health_ready_info(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json()["status"] == "ready"
    info = client.get("/info").json()
    assert info["index"]["size"] == len(DOCS) and info["index"]["factory"] == "Flat"
    assert info["model"]["dim"] == 32 and info["bm25"]["available"] is True
    assert info["manifest"]["count"] == len(DOCS) and info["limits"]["max_k"] == 5


def test_info_names_the_model_as_the_user_gave_it(tiny_model: Path, tmp_path: Path) -> None:
    """An installed model resolves to a folder named like ``.../model``; /info and the
    page show the name the index was built with, and its hash."""
    from indexer.build import build_index
    from search.encoder import TorchEncoder

    folder = Path(shutil.copytree(tiny_model, tmp_path / "pkg" / "model"))
    encoder = TorchEncoder(folder, name="tiny-bert-32")
    build_index(encoder, DOCS, tmp_path / "idx", model_path=str(folder), progress=False)
    with TestClient(create_app(Settings(index_dir=tmp_path / "idx"))) as c:
        model = c.get("/info").json()["model"]
    assert model["name"] == "tiny-bert-32" and model["hash"] == encoder.model_hash


def test_metrics_per_app(client: TestClient, plain_client: TestClient) -> None:
    client.post("/search", json={"query": "cats"})
    text = client.get("/metrics").text
    assert 'distilsearch_http_requests_total{method="POST",route="/search",status="200"}' in text
    assert "distilsearch_encode_seconds_count" in text
    assert 'distilsearch_search_seconds_count{kind="bm25"}' in text
    assert f"distilsearch_index_documents {float(len(DOCS))}" in text
    assert 'route="/documents/{doc_id:path}"' in text and 'route="unmatched"' in text
    other = plain_client.get("/metrics").text  # its own registry: no bm25 searches there
    assert 'distilsearch_search_seconds_count{kind="bm25"}' not in other


def test_page_is_served(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert client.get("/static/app.js").status_code == 200


def test_cors_is_off_by_default_and_can_be_enabled(index_dir: Path, client: TestClient) -> None:
    origin = {"Origin": "https://elsewhere.example"}
    assert "access-control-allow-origin" not in client.get("/health", headers=origin).headers
    app = create_app(Settings(index_dir=index_dir, cors_origins=["https://elsewhere.example"]))
    with TestClient(app) as c:
        r = c.get("/health", headers=origin)
        assert r.headers["access-control-allow-origin"] == "https://elsewhere.example"
        r = c.get("/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


def test_settings_safe_defaults_and_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    s = Settings(index_dir=tmp_path)
    assert s.host == "127.0.0.1" and s.api_key is None and s.cors_origins == []
    monkeypatch.setenv("DISTILSEARCH_MAX_K", "7")
    monkeypatch.setenv("DISTILSEARCH_API_KEY", KEY)
    monkeypatch.setenv("DISTILSEARCH_CORS_ORIGINS", '["https://a.example"]')
    s = Settings(index_dir=tmp_path)
    assert s.max_k == 7 and s.cors_origins == ["https://a.example"]
    assert s.api_key is not None and s.api_key.get_secret_value() == KEY
    assert KEY not in repr(s) and KEY not in str(s.model_dump())
    with pytest.raises(ValidationError, match="at least 16 characters"):
        Settings(index_dir=tmp_path, api_key="short")


def test_the_schema_pattern_matches_the_query_check() -> None:
    """The published pattern finds a character that shows exactly where the server's
    check does, whitespace as strip() sees it and the zero-width characters included."""
    import re

    from api.openapi import NOT_BLANK
    from api.validation import is_blank

    blank = re.compile(f"^(?!.*{NOT_BLANK})", re.S)
    for code in [*range(0xD800), *range(0xE000, 0x30000), *range(0xE0000, 0xE1000)]:
        ch = chr(code)
        assert bool(blank.match(ch)) == is_blank(ch), hex(code)
        if ch.strip() == "":
            assert is_blank(ch), hex(code)
    for invisible in "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e\u3164\ufe0f\U000e0041\x00":
        assert is_blank(invisible) and is_blank(f" {invisible} \t"), hex(ord(invisible))
    for shown in ("a", "\u00e9", "\u4e2d", "\U0001f600", "\u200ba", "\x00cat"):
        assert not is_blank(shown), shown
