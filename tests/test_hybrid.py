"""Fusion of dense and BM25 rankings, checked against hand-computed values."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import SMALL_DOCS
from typer.testing import CliRunner

from api.cli import app as cli
from search.hybrid import convex, fuse, fuse_results, min_max, rrf

DENSE = [("a", 0.9), ("b", 0.8), ("c", 0.5)]
SPARSE = [("c", 12.0), ("d", 6.0), ("a", 3.0)]


def test_rrf_by_hand() -> None:
    got = dict(rrf(DENSE, SPARSE, weight=0.5, c=60))
    # a: 0.5/61 + 0.5/63; b: 0.5/62; c: 0.5/63 + 0.5/61; d: 0.5/62
    assert got["a"] == pytest.approx(0.5 / 61 + 0.5 / 63)
    assert got["c"] == pytest.approx(0.5 / 63 + 0.5 / 61)
    assert got["b"] == pytest.approx(0.5 / 62)
    assert got["d"] == pytest.approx(0.5 / 62)


def test_rrf_order_and_ties_keep_first_seen() -> None:
    keys = [k for k, _ in rrf(DENSE, SPARSE)]
    # a and c tie (both ranks 1 and 3), a seen first; b and d tie, b seen first.
    assert keys == ["a", "c", "b", "d"]


def test_rrf_weight_one_is_the_dense_ranking() -> None:
    keys = [k for k, s in rrf(DENSE, SPARSE, weight=1.0) if s > 0]
    assert keys == ["a", "b", "c"]


def test_min_max() -> None:
    assert min_max([3.0, 1.0, 2.0]) == [1.0, 0.0, 0.5]
    assert min_max([7.0, 7.0]) == [1.0, 1.0]
    assert min_max([]) == []


def test_convex_by_hand() -> None:
    got = dict(convex(DENSE, SPARSE, weight=0.4))
    # dense normalised: a 1, b 0.75, c 0; sparse normalised: c 1, d 1/3, a 0
    assert got["a"] == pytest.approx(0.4 * 1.0 + 0.6 * 0.0)
    assert got["b"] == pytest.approx(0.4 * 0.75)
    assert got["c"] == pytest.approx(0.4 * 0.0 + 0.6 * 1.0)
    assert got["d"] == pytest.approx(0.6 * (6 - 3) / (12 - 3))
    assert [k for k, _ in convex(DENSE, SPARSE, weight=0.4)] == ["c", "a", "b", "d"]


def test_fuse_dispatches_and_validates() -> None:
    assert fuse(DENSE, SPARSE, method="rrf") == rrf(DENSE, SPARSE)
    assert fuse(DENSE, SPARSE, method="convex", weight=0.3) == convex(DENSE, SPARSE, weight=0.3)
    with pytest.raises(ValueError, match="rrf"):
        fuse(DENSE, SPARSE, method="sum")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        rrf(DENSE, SPARSE, weight=1.5)


def test_empty_side() -> None:
    assert [k for k, _ in convex(DENSE, [], weight=0.5)] == ["a", "b", "c"]
    assert rrf([], []) == []


def test_fuse_results_keeps_inputs_and_cuts_at_k() -> None:
    dense = {"q1": dict(DENSE)}
    sparse = {"q1": dict(SPARSE), "q2": {"x": 1.0}}
    before = (repr(dense), repr(sparse))
    out = fuse_results(dense, sparse, method="rrf", k=2)
    assert list(out["q1"]) == ["a", "c"]
    assert list(out["q2"]) == ["x"]
    assert (repr(dense), repr(sparse)) == before


def test_evaluate_hybrid_ends_match_each_side(tiny_model: Path, scifact_slice: Path) -> None:
    """weight 1 is the dense ranking and weight 0 the BM25 ranking (RRF keeps ranks)."""
    from search.corpus import load_beir
    from search.encoder import load_encoder
    from search.evaluate import (
        bm25_results,
        dense_results,
        evaluate,
        evaluate_hybrid,
        score_results,
    )

    encoder = load_encoder(tiny_model)
    corpus, queries, qrels = load_beir(scifact_slice, "test")
    dense = evaluate(encoder, corpus, queries, qrels, progress=False)
    bm25 = evaluate(None, corpus, queries, qrels, progress=False)
    for weight, side in ((1.0, dense), (0.0, bm25)):
        got = evaluate_hybrid(
            encoder, corpus, queries, qrels, progress=False, method="rrf", weight=weight
        )
        assert got["ndcg@10"] == pytest.approx(side["ndcg@10"])
    mixed = evaluate_hybrid(encoder, corpus, queries, qrels, progress=False)
    assert mixed["model"].startswith("hybrid(") and mixed["fusion"] == "convex"
    # Between the ends: the same as fusing each side's own results by hand, for the
    # default and for settings where swapping the sides or the method would show.
    d_res, _ = dense_results(encoder, corpus, queries, progress=False)
    s_res, _ = bm25_results(corpus, queries)
    for method, weight in (("convex", 0.5), ("convex", 0.3), ("rrf", 0.7)):
        want = score_results(qrels, fuse_results(d_res, s_res, method=method, weight=weight))
        got = (
            mixed
            if (method, weight) == ("convex", 0.5)
            else evaluate_hybrid(
                encoder, corpus, queries, qrels, progress=False, method=method, weight=weight
            )
        )
        assert got["ndcg@10"] == pytest.approx(want["ndcg@10"], abs=1e-9), (method, weight)


PARITY_DOCS = [
    *SMALL_DOCS,
    ("d9", "Ferrets", "Ferrets are playful pets; a ferret sleeps a lot."),
    ("d10", "Herding", "Sheep dogs help with herding on farms."),
]
PARITY_QUERIES = {
    "q1": "young cats and kittens",
    "q2": "programming language",
    "q3": "dogs herding sheep",
    "q4": "pets that sleep a lot",
    "q5": "machine code",
}


def test_evaluation_and_service_rank_hybrid_alike(
    tiny_model: Path, tiny_index: Callable[..., Path], tmp_path: Path
) -> None:
    """The same index folder and queries: evaluation's hybrid ranking is the service's."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.settings import Settings
    from search.encoder import load_encoder
    from search.evaluate import hybrid_results

    folder = tiny_index(PARITY_DOCS, tmp_path / "idx", bm25=True)
    corpus = {i: {"title": title, "text": text} for i, title, text in PARITY_DOCS}
    k = 5
    evaluated, _ = hybrid_results(
        load_encoder(tiny_model), corpus, PARITY_QUERIES, progress=False, k=k
    )
    with TestClient(create_app(Settings(index_dir=folder))) as client:
        for qid, query in PARITY_QUERIES.items():
            body = client.post("/search", json={"query": query, "k": k, "mode": "hybrid"}).json()
            served = [(h["id"], h["score"]) for h in body["hits"]]
            assert [i for i, _ in served] == list(evaluated[qid]), query
            assert [s for _, s in served] == pytest.approx(list(evaluated[qid].values()), abs=1e-5)
    # `distilsearch search` too, in its default mode (this index has BM25).
    runner = CliRunner()
    for qid, query in list(PARITY_QUERIES.items())[:2]:
        r = runner.invoke(cli, ["search", "--index", str(folder), query, "-k", str(k), "--json"])
        assert r.exit_code == 0, r.output
        body = json.loads(r.stdout)
        assert body["mode"] == "hybrid" and [h["id"] for h in body["hits"]] == list(evaluated[qid])
