"""End to end with the real teacher (all-mpnet-base-v2) and student (all-MiniLM-L6-v2)
on a 20-query SciFact slice: distill a few steps, index, search, eval, one HTTP call."""

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from api.cli import app as cli
from api.settings import Settings
from distill.config import DistillConfig
from distill.gate import ValidationSet, score

pytestmark = pytest.mark.slow

TEACHER, STUDENT = "all-mpnet-base-v2", "all-MiniLM-L6-v2"
DISTILL = {
    "max_texts": 48,
    "batch_size": 8,
    "max_minutes": 1.0,
    "static_candidate": False,
    "max_seq_length": 256,  # one window: one shipped candidate beside the trained one
}
# all-MiniLM-L6-v2 does about an eighth of all-mpnet-base-v2's work per token (half
# the layers, half the width); served as int8 ONNX it encodes SciFact documents about
# 15x as fast as the fp32 teacher (README), but a student no smaller than its teacher
# measures about 1.
MIN_SPEED_RATIO = 3.0
# On this slice (98 documents, every relevant one among them) the teacher scored
# 0.963 and BM25 0.902: a teacher below BM25 is broken (MiniLM cut to 16 tokens
# scores 0.726). On the full split shipped MiniLM keeps 98.4 % of the teacher's
# nDCG@10 (0.6451 / 0.6557) and on this slice 100.5 %; a student below 95 % lost
# more than a distillation of a few steps can be allowed to.
MIN_SHARE_OF_TEACHER = 0.95


def validation_set(data: Path, out: Path, precision: str) -> ValidationSet:
    """The validation set that judged the candidates, rebuilt as `distill` builds it:
    the same config, texts and seed, the teacher in the precision the run chose, its
    labels from the embedding cache the run filled. The slice has no train qrels, so
    its queries are held-out texts judged by the teacher's top-10."""
    from distill.gate import validation_set
    from distill.texts import label, split_texts
    from search.assets import embeddings_dir
    from search.embed_cache import cache_for
    from search.encoder import load_encoder

    config = DistillConfig(teacher=TEACHER, student=STUDENT, data=data, out=out, **DISTILL)
    teacher = load_encoder(TEACHER, backend="torch", precision=precision)
    cache = cache_for(teacher, embeddings_dir())
    labelled = label(split_texts(config), teacher, cache, progress=False)
    select, _ = validation_set(config, labelled, teacher, cache)
    return select


def test_distill_index_search_eval_serve(scifact_slice: Path, tmp_path: Path) -> None:
    from search.encoder import load_encoder

    runner = CliRunner()
    student = tmp_path / "student"
    flags = {k.replace("_", "-"): v for k, v in DISTILL.items()}
    options = [f"--no-{k}" if v is False else f"--{k}={v}" for k, v in flags.items()]
    args = ["--teacher", TEACHER, "--student", STUDENT, "--data", str(scifact_slice)]
    r = runner.invoke(cli, ["distill", *args, "--out", str(student), *options])
    assert r.exit_code == 0, r.output
    for step in ("[1/4] setting up", "[2/4] training", "[3/4] choosing", "[4/4] publishing"):
        assert step in r.stderr, r.stderr
    report = json.loads((student / "distill_report.json").read_text())
    assert report["steps"] > 0
    rows = {row["name"]: row for row in report["choice"]["candidates"]}
    emitted = rows[report["choice"]["emitted"]]
    assert emitted["x_teacher"] > MIN_SPEED_RATIO, emitted
    gate = report["gate"]
    assert gate["source"] == "teacher top-10"  # the slice has no train qrels
    # The emitted model, loaded from its folder as `auto` serves it and scored on the
    # same validation set, scores what its row says, and at least the best untrained
    # candidate unless it is a trained one with a significant gain.
    val = validation_set(scifact_slice, student, report["precision"]["precision"])
    assert (len(val.queries), len(val.corpus)) == (gate["queries"], gate["docs"])
    rescored = score(load_encoder(student), val)
    assert rescored == pytest.approx(emitted["ndcg10"], abs=1e-4), (rescored, emitted)
    if not emitted["trained"]:
        assert emitted["ndcg10"] == max(x["ndcg10"] for x in rows.values() if not x["trained"])
    else:
        assert emitted["vs_baseline"]["p"] < 0.05 and emitted["vs_baseline"]["gain"] > 0
    assert (student / "onnx" / "model.onnx").is_file()  # exported and checked against torch

    idx = tmp_path / "idx"
    r = runner.invoke(
        cli, ["index", "--model", str(student), "--data", str(scifact_slice), "--out", str(idx)]
    )
    assert r.exit_code == 0, r.output

    evals = {}
    for name, model in (("student", str(student)), ("teacher", TEACHER), ("bm25", "bm25")):
        r = runner.invoke(cli, ["eval", "--model", model, "--data", str(scifact_slice), "--json"])
        assert r.exit_code == 0, r.output
        evals[name] = json.loads(r.stdout)
    ndcg = {name: e["ndcg@10"] for name, e in evals.items()}
    assert ndcg["teacher"] > ndcg["bm25"], ndcg
    assert ndcg["student"] >= MIN_SHARE_OF_TEACHER * ndcg["teacher"], ndcg
    assert evals["student"]["docs_per_s"] > evals["teacher"]["docs_per_s"]

    query = json.loads((scifact_slice / "queries.jsonl").read_text().splitlines()[0])
    with TestClient(create_app(Settings(index_dir=idx))) as client:
        # The student's own ranking (hybrid, the default, mixes in BM25).
        body = client.post("/search", json={"query": query["text"], "k": 5, "mode": "dense"}).json()
    assert len(body["hits"]) == 5
    relevant = {
        line.split("\t")[1]
        for line in (scifact_slice / "qrels" / "test.tsv").read_text().splitlines()[1:]
        if line.split("\t")[0] == query["_id"]
    }
    assert relevant & {h["id"] for h in body["hits"]}
