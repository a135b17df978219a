"""`distilsearch serve` as a user runs it: a real process on 127.0.0.1, spoken to over
the socket.

Each server is the console script on a free port with the tiny model's index. Every
wait and every request loop is bounded in count and time.
"""

from __future__ import annotations

import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from conftest import SERVE_KEY as KEY
from conftest import SMALL_DOCS as DOCS
from conftest import START_S, Server, poll_ready, serving


@pytest.fixture(scope="module")
def index_dir(tiny_index: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_index(DOCS, tmp_path_factory.mktemp("served") / "idx", bm25=True)


@pytest.fixture(scope="module")
def server(
    distilsearch_cmd: list[str], index_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("served-log") / "serve.log"
    limits = {"DISTILSEARCH_MAX_K": "5", "DISTILSEARCH_MAX_BODY_BYTES": "4096"}
    with serving(distilsearch_cmd, index_dir, log, **limits) as running:
        poll_ready(running)
        yield running


def ids(body: dict) -> list[str]:
    return [h["id"] for h in body["hits"]]


def test_search_in_each_mode(server: Server) -> None:
    exact = "Cats Cats are small domesticated felines that purr."
    with server.client() as client:
        dense = client.post("/search", json={"query": exact, "mode": "dense"}).json()
        assert dense["mode"] == "dense" and ids(dense)[0] == "d1"
        bm25 = client.post("/search", json={"query": "programming language", "mode": "bm25"})
        assert bm25.status_code == 200 and set(ids(bm25.json())[:2]) == {"d5", "d6"}
        hybrid = client.get("/search", params={"q": "programming language", "mode": "hybrid"})
        assert hybrid.status_code == 200 and set(ids(hybrid.json())[:2]) == {"d5", "d6"}
        default = client.get("/search", params={"q": "programming language"}).json()
        assert default["mode"] == "hybrid" and default["hits"] == hybrid.json()["hits"]
        batch = client.post("/search/batch", json={"queries": ["cats", "rust"], "k": 2}).json()
        assert [len(r["hits"]) for r in batch["results"]] == [2, 2]
        assert ids(batch["results"][1])[0] == "d6"


def test_admin_upsert_and_delete_with_the_key(server: Server) -> None:
    auth = {"X-API-Key": KEY}
    doc = {"id": "d9", "title": "Ferrets", "text": "Ferrets are playful mustelids."}
    with server.client() as client:
        assert client.post("/documents", json={"documents": [doc]}).status_code == 401
        r = client.post("/documents", json={"documents": [doc]}, headers=auth)
        assert r.status_code == 200 and r.json()["added"] == 1, r.text
        found = client.post("/search", json={"query": "ferrets", "mode": "bm25"}).json()
        assert ids(found) == ["d9"]
        r = client.delete("/documents/d9", headers=auth)
        assert r.status_code == 200 and r.json()["deleted"] == 1, r.text
        assert client.get("/documents/d9").status_code == 404
        gone = client.post("/search", json={"query": "ferrets", "mode": "bm25"}).json()
        assert gone["hits"] == []


@pytest.mark.parametrize(
    "method, url, kwargs, status, fragment",
    [
        ("post", "/search", {"json": {"query": " "}}, 422, "whitespace"),
        ("post", "/search", {"json": {"query": "x", "k": 6}}, 422, "over the limit 5"),
        ("post", "/search", {"json": {"query": "x", "mode": "fuzzy"}}, 422, "'hybrid'"),
        (
            "post",
            "/search",
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            422,
            "JSON decode error",
        ),
        ("post", "/search", {"content": b"x", "headers": {"content-type": "text/plain"}}, 415, ""),
        ("get", "/documents/missing", {}, 404, "no document with id 'missing'"),
        ("post", "/admin/reload", {"headers": {"X-API-Key": "wrong-key-0123456789"}}, 403, ""),
        ("post", "/search", {"json": {"query": "x" * 5000}}, 413, "limit is 4096"),
        (
            "post",
            "/search",
            {
                "content": iter([b'{"query": "', b"x" * 5000, b'"}']),  # chunked, no length
                "headers": {"content-type": "application/json"},
            },
            413,
            "limit is 4096",
        ),
    ],
)
def test_bad_requests_get_a_4xx_with_json_detail(
    server: Server, method: str, url: str, kwargs: dict, status: int, fragment: str
) -> None:
    with server.client() as client:
        r = client.request(method.upper(), url, **kwargs)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.json()["detail"] and fragment in str(r.json()["detail"]), r.text


def test_overload_is_a_503_with_retry_after(
    distilsearch_cmd: list[str], index_dir: Path, tmp_path: Path
) -> None:
    """One queued query at most: a batch of 64 dense queries overfills the queue."""
    limits = {
        "DISTILSEARCH_MAX_QUEUE": "1",
        "DISTILSEARCH_ENCODE_WORKERS": "1",
        "DISTILSEARCH_BATCH_MAX_SIZE": "1",
    }
    with serving(distilsearch_cmd, index_dir, tmp_path / "serve.log", **limits) as running:
        poll_ready(running)
        queries = [f"query number {i}" for i in range(64)]
        with running.client() as client:
            for _ in range(5):  # one is enough: the 64 are queued faster than encoded
                r = client.post("/search/batch", json={"queries": queries, "mode": "dense"})
                if r.status_code == 503:
                    break
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] == "1" and "retry" in r.json()["detail"]
            # the server recovers once the queries admitted before the 503 are encoded
            deadline = time.monotonic() + 10
            while (status := client.post("/search", json={"query": "cats"}).status_code) == 503:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert status == 200


def test_ready_waits_for_the_index_and_sigterm_lets_requests_finish(
    distilsearch_cmd: list[str], index_dir: Path, tmp_path: Path
) -> None:
    with serving(distilsearch_cmd, index_dir, tmp_path / "serve.log") as running:
        seen = poll_ready(running)
        # The port opens before the model is loaded: alive, not ready, then ready.
        loading = [s for s in seen if s[1] == 503]
        assert loading and all(health == 200 for health, _, _ in loading), seen
        assert "not loaded yet" in loading[0][2] and seen[-1][1] == 200

        # In flight when SIGTERM comes: a request whose body is still arriving, and
        # searches in a loop on other connections.
        slow = socket.create_connection(running.address, timeout=30)
        body = b'{"query": "young cat", "k": 3}'
        slow.sendall(
            b"POST /search HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:10]
        )
        statuses: list[int] = []
        stop = threading.Event()

        def search_loop() -> None:
            with running.client() as client:
                for _ in range(500):
                    try:
                        statuses.append(client.post("/search", json={"query": "cat"}).status_code)
                    except httpx.TransportError:
                        return  # the server stopped accepting connections
                    if stop.is_set():
                        return

        threads = [threading.Thread(target=search_loop) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        running.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        slow.sendall(body[10:])
        answer = b""
        for _ in range(1000):  # the server closes the connection after answering
            chunk = slow.recv(65536)
            if not chunk:
                break
            answer += chunk
        slow.close()
        stop.set()
        for t in threads:
            t.join(30)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        assert b'"query":"young cat"' in answer and b'"hits":[{' in answer, answer[-300:]
        assert statuses and set(statuses) == {200}, statuses
        t0 = time.monotonic()
        code = running.process.wait(15)
        assert code == 0, running.log_text()
        assert time.monotonic() - t0 < 15
        assert "Finished server process" in running.log_text()


def test_an_index_that_fails_to_load_exits_2_with_the_reason(
    distilsearch_cmd: list[str], tiny_model: Path, tmp_path: Path
) -> None:
    from indexer.build import build_index
    from search.encoder import load_encoder

    model = Path(shutil.copytree(tiny_model, tmp_path / "model"))
    build_index(load_encoder(model), DOCS, tmp_path / "idx", model_path=str(model), progress=False)
    for weights in model.rglob("*.safetensors"):
        weights.write_bytes(b"not weights")  # the index is fine; its model is not
    with serving(distilsearch_cmd, tmp_path / "idx", tmp_path / "serve.log") as running:
        code = running.process.wait(START_S)
        log = running.log_text()
    assert code == 2, log
    assert "error: cannot serve" in log and "cannot load the index" in log
