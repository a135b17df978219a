from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from indexer.build import build_index
from search.corpus import iter_documents
from search.encoder import load_encoder


@pytest.fixture
def client(tiny_model: Path, small_jsonl: Path, tmp_path: Path) -> Iterator[TestClient]:
    idx = tmp_path / "idx"
    build_index(
        load_encoder(tiny_model),
        iter_documents(small_jsonl),
        idx,
        model_path=str(tiny_model),
        progress=False,
    )
    with TestClient(create_app(Settings(index_dir=idx, max_k=5))) as c:
        yield c


def test_health_and_docs(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/docs").status_code == 200
    assert "/search" in client.get("/openapi.json").json()["paths"]


def test_search_returns_typed_hits(client: TestClient) -> None:
    body = client.post(
        "/search", json={"query": "Cats Cats are small domesticated felines that purr.", "k": 3}
    ).json()
    assert len(body["hits"]) == 3 and body["hits"][0]["id"] == "d1"
    assert set(body["hits"][0]) == {"id", "score", "title", "snippet"}


@pytest.mark.parametrize(
    "payload, fragment",
    [
        ({"query": "", "k": 3}, "at least 1 character"),
        ({"query": "   ", "k": 3}, "whitespace"),
        ({"query": "x", "k": 0}, "greater than or equal to 1"),
        ({"query": "x", "k": 6}, "over the limit 5"),
        ({"query": 5, "k": 1}, "valid string"),
        ({"k": 1}, "Field required"),
        ({"query": "x", "k": 1, "extra": 1}, "Extra inputs"),
    ],
)
def test_bad_requests_get_422_with_detail(client: TestClient, payload: dict, fragment: str) -> None:
    r = client.post("/search", json=payload)
    assert r.status_code == 422
    assert fragment in str(r.json()["detail"])


def test_malformed_json_is_4xx(client: TestClient) -> None:
    r = client.post("/search", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "detail" in r.json()
