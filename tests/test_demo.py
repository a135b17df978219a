"""`distilsearch demo` on a SciFact slice with tiny models: the slice, the quick demo's
real static distillation, index and four-row table, cached re-runs, the full path's
config, and the command serving a page that answers."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from api.demo import SliceSpec, run_demo, sample_slice
from distill.config import DistillConfig
from distill.report import REPORT
from search.assets import model_hash
from search.corpus import load_beir
from search.index_folder import read_index_manifest

ROOT = Path(__file__).resolve().parents[1]


def test_sample_slice_keeps_relevant_docs_and_leaves_inputs_alone(scifact_slice: Path) -> None:
    corpus, queries, qrels = load_beir(scifact_slice, "test")
    before = copy.deepcopy((corpus, queries, qrels))
    spec = SliceSpec(queries=5, docs=30, hard_per_query=2, seed=1)

    sub_corpus, sub_queries, sub_qrels = sample_slice(corpus, queries, qrels, spec)

    assert (corpus, queries, qrels) == before
    assert len(sub_queries) == 5 and set(sub_qrels) == set(sub_queries)
    assert len(sub_corpus) == 30 and set(sub_corpus) <= set(corpus)
    assert all(d in sub_corpus for q in sub_qrels for d in sub_qrels[q])
    assert sample_slice(corpus, queries, qrels, spec) == (sub_corpus, sub_queries, sub_qrels)
    everything = sample_slice(corpus, queries, qrels, SliceSpec(queries=999, docs=10_000))
    assert len(everything[0]) == len(corpus) and len(everything[1]) == len(qrels)


QUICK_STUDENT = {"student": "static:epochs=3,batch=8", "max_texts": 60}
"""A static student the tiny teacher distils in seconds."""


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DISTILSEARCH_CACHE the demos of this module share: the tiny teacher's plain
    static distillation (the same options in each) is made once."""
    return tmp_path_factory.mktemp("demo-cache")


def test_quick_demo_distils_a_static_student_serves_its_index_and_compares_four_rows(
    tiny_model: Path,
    tiny_model_64: Path,
    scifact_slice: Path,
    demo_cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DISTILSEARCH_CACHE", str(demo_cache))
    monkeypatch.setenv("DISTILSEARCH_EMBED_CACHE", str(tmp_path / "emb"))
    lines: list[str] = []
    spec = SliceSpec(queries=8, docs=40)
    args = {"model": str(tiny_model), "teacher": str(tiny_model_64), "spec": spec, **QUICK_STUDENT}

    result = run_demo(scifact_slice, tmp_path / "demo", say=lines.append, **args)

    out = tmp_path / "demo" / "quick"
    student = out / "student"
    report = json.loads((student / REPORT).read_text())
    assert report["kind"] == "static" and report["teacher"] == str(tiny_model_64)
    assert 20 <= report["texts"]["total"] <= 60
    assert report["texts"]["teacher_labelled_now"] == report["texts"]["total"]
    # the index that answers was built with the student this run distilled, BM25 beside it
    assert result.index_dir == out / "index" and (result.index_dir / "bm25").is_dir()
    manifest = read_index_manifest(result.index_dir)
    assert manifest["model"]["hash"] == report["student_hash"] == model_hash(student)
    hybrid = report["hybrid"]
    assert result.serve == {"hybrid_fusion": hybrid["method"], "hybrid_weight": hybrid["weight"]}

    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["role"] for r in rows] == ["teacher", "baseline", "student", "hybrid"]
    assert rows[0]["model_hash"] == model_hash(tiny_model_64)
    assert rows[1]["model_hash"] == model_hash(tiny_model)
    assert rows[2]["model_hash"] == rows[3]["model_hash"] == report["student_hash"]
    assert rows[3]["model"].startswith("hybrid(") and rows[3]["weight"] == hybrid["weight"]
    assert all(r["num_queries"] == 8 and r["num_docs"] == 40 for r in rows)
    # docs/s measured in this run on the slice's documents (the teacher's cache may hold
    # them from the run's validation set; then it is timed again on a sample of them)
    assert all(r["docs_per_s_source"].startswith("measured") for r in rows), rows
    assert all(r["docs_per_s"] > 0 for r in rows)
    assert all("p_vs_teacher" in r and "per_query_ndcg@10" not in r for r in rows[1:])
    table = (out / "results.md").read_text()
    assert "a slice: 8 of 20 queries, 40 of" in table
    labels = [x.split("|")[1].strip() for x in table.splitlines() if x.startswith("| ")][2:]
    assert labels == [
        "teacher (tiny-model)",
        "shipped tiny-model",
        "static student (distilled now)",
        f"static student + BM25 (hybrid, dense weight {hybrid['weight']:g})",
    ]
    for step in ("[1/4]", "[2/4]", "[3/4]"):
        assert any(x.startswith(step) for x in lines), lines
    assert any("a sample of 60 texts" in x for x in lines), lines

    lines.clear()
    again = run_demo(scifact_slice, tmp_path / "demo", say=lines.append, **args)
    assert sum("up to date" in x for x in lines) == 3, lines
    assert again.rows == rows and again.table == result.table and again.serve == result.serve


def test_quick_demo_refuses_a_transformer_student(scifact_slice: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="distils a static student"):
        run_demo(scifact_slice, tmp_path, student="all-MiniLM-L6-v2")


def test_full_demo_hands_distill_distillconfigs_default(
    scifact_slice: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the hand-off: the default distillation itself runs in test_e2e_real."""
    seen: list[DistillConfig] = []

    class Stop(Exception):
        pass

    def fake_distill(config: DistillConfig) -> None:
        seen.append(config)
        raise Stop

    monkeypatch.setattr("api.demo.distill", fake_distill)
    with pytest.raises(Stop):
        run_demo(scifact_slice, tmp_path, full=True)
    default = DistillConfig(data=scifact_slice, out=tmp_path / "student")
    assert seen[0] == default


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_demo_command_serves_a_page_that_answers(
    tiny_model: Path, tiny_model_64: Path, scifact_slice: Path, demo_cache: Path, tmp_path: Path
) -> None:
    port = _free_port()
    cmd = [sys.executable, "-c", "from api.cli import main; main()", "demo"]
    cmd += ["--data", str(scifact_slice), "--out", str(tmp_path), "--port", str(port)]
    cmd += ["--model", str(tiny_model), "--teacher", str(tiny_model_64), "--max-texts", "60"]
    env = {
        **os.environ,
        "DISTILSEARCH_DEMO_T0": str(time.time()),
        "DISTILSEARCH_CACHE": str(demo_cache),
        "DISTILSEARCH_HYBRID_WEIGHT": "0.05",  # off the run's grid: the demo's choice wins
    }
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 600
        while not any("the search page answers" in x for x in seen):
            assert proc.poll() is None, "".join(seen)
            assert time.monotonic() < deadline, "".join(seen)
            with contextlib.suppress(queue.Empty):
                seen.append(lines.get(timeout=1))
        url = f"http://127.0.0.1:{port}"
        page = httpx.get(url + "/", timeout=30)
        assert page.status_code == 200 and "<html" in page.text.lower()
        hits = httpx.post(url + "/search", json={"query": "cancer", "k": 5}, timeout=30)
        assert hits.status_code == 200 and len(hits.json()["hits"]) == 5
        # the served index is the distilled student's, searched hybrid at its chosen weight
        info = httpx.get(url + "/info", timeout=30).json()
        report = json.loads((tmp_path / "quick" / "student" / REPORT).read_text())
        assert info["model"]["hash"] == report["student_hash"]
        assert info["default_mode"] == "hybrid"
        assert info["bm25"]["hybrid"]["weight"] == report["hybrid"]["weight"]
    finally:
        proc.terminate()
        proc.wait(60)
    text = "".join(seen)
    steps = ("[1/4]", "[2/4]", "[3/4]", "[4/4] serving", "hybrid_weight=", "found 10 hits")
    for step in (*steps, "since `make demo` started"):
        assert step in text, text
    assert (tmp_path / "quick" / "results.md").is_file()
