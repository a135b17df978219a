"""`distilsearch eval --mode` and `distilsearch serve` settings checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api.cli import app
from indexer.build import build_index
from search.encoder import load_encoder

runner = CliRunner()


def test_eval_modes(tiny_model: Path, scifact_slice: Path) -> None:
    data = ["--data", str(scifact_slice), "--json"]
    bm25 = runner.invoke(app, ["eval", "--mode", "bm25", *data])
    assert bm25.exit_code == 0, bm25.output
    hybrid = runner.invoke(app, ["eval", "--model", str(tiny_model), "--mode", "hybrid", *data])
    assert hybrid.exit_code == 0, hybrid.output
    b, h = json.loads(bm25.stdout), json.loads(hybrid.stdout)
    assert (b["mode"], b["model"]) == ("bm25", "bm25")
    assert h["mode"] == "hybrid" and h["fusion"] == "convex" and h["model"].startswith("hybrid(")
    assert 0 < h["ndcg@10"] <= 1 and h["num_queries"] == b["num_queries"] == 20


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
