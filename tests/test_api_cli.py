"""`distilsearch eval --mode` and `distilsearch serve` settings checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api.cli import app
from indexer.build import build_index
from search.corpus import load_beir
from search.encoder import load_encoder
from search.evaluate import evaluate

runner = CliRunner()


# nDCG@10 on the 20-query slice (98 documents, every relevant one among them), measured
# once: all-MiniLM-L6-v2 dense 0.968, hybrid 0.944; MiniLM cut to 16 tokens, dense
# 0.726; MiniLM with its document vectors shuffled (a broken encoder), dense 0.035,
# hybrid 0.841; BM25 0.902. Each bound sits midway between the working model and the
# nearest broken one.
MINILM_DENSE_FLOOR = 0.85  # between 0.968 and 0.726
MINILM_HYBRID_FLOOR = 0.89  # between 0.944 and 0.841


def test_eval_modes(scifact_slice: Path) -> None:
    data = ["--data", str(scifact_slice), "--json"]
    runs = {
        "bm25": ["--mode", "bm25"],
        "dense": ["--model", "all-MiniLM-L6-v2", "--mode", "dense"],
        "hybrid": ["--model", "all-MiniLM-L6-v2", "--mode", "hybrid"],
    }
    got = {}
    for mode, args in runs.items():
        r = runner.invoke(app, ["eval", *args, *data])
        assert r.exit_code == 0, r.output
        got[mode] = json.loads(r.stdout)
    b, d, h = got["bm25"], got["dense"], got["hybrid"]
    assert (b["mode"], b["model"]) == ("bm25", "bm25")
    assert h["mode"] == "hybrid" and h["fusion"] == "convex" and h["model"].startswith("hybrid(")
    assert h["num_queries"] == d["num_queries"] == b["num_queries"] == 20
    corpus, queries, qrels = load_beir(scifact_slice, "test")
    assert b["ndcg@10"] == evaluate(None, corpus, queries, qrels, progress=False)["ndcg@10"]
    assert d["ndcg@10"] > MINILM_DENSE_FLOOR, d
    assert h["ndcg@10"] > MINILM_HYBRID_FLOOR, h


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--mode", "hybrid"], "needs --model"),
        (["--mode", "fuzzy", "--model", "x"], "not one of dense, bm25, hybrid"),
    ],
)
def test_eval_bad_modes_exit_2(scifact_slice: Path, args: list[str], fragment: str) -> None:
    r = runner.invoke(app, ["eval", "--data", str(scifact_slice), *args])
    assert r.exit_code == 2 and fragment in r.stderr


def test_serve_refuses_a_short_api_key(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    idx = tmp_path / "idx"
    docs = [("d1", "", "one document")]
    build_index(load_encoder(tiny_model), docs, idx, model_path=str(tiny_model), progress=False)
    monkeypatch.setenv("DISTILSEARCH_API_KEY", "short")
    r = runner.invoke(app, ["serve", "--index", str(idx)])
    assert r.exit_code == 2 and "api_key" in r.stderr and "16 characters" in r.stderr
