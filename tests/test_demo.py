"""`distilsearch demo` on a SciFact slice with tiny models: the slice, the results table,
cached re-runs, the full path's config, and the command serving a page that answers."""

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
from search.corpus import load_beir

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


def test_quick_demo_writes_the_table_and_a_rerun_skips_work(
    tiny_model: Path, tiny_model_64: Path, scifact_slice: Path, tmp_path: Path
) -> None:
    lines: list[str] = []
    spec = SliceSpec(queries=8, docs=40)
    args = {"model": str(tiny_model), "teacher": str(tiny_model_64), "spec": spec}

    result = run_demo(scifact_slice, tmp_path, say=lines.append, **args)

    out = tmp_path / "quick"
    assert result.index_dir == out / "index" and (out / "index" / "manifest.json").is_file()
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["role"] for r in rows] == ["teacher", "student"]
    assert all(r["num_queries"] == 8 and r["num_docs"] == 40 for r in rows)
    assert "p_vs_teacher" in rows[1] and "per_query_ndcg@10" not in rows[1]
    table = (out / "results.md").read_text()
    assert "a slice: 8 of 20 queries, 40 of" in table
    labels = [x.split("|")[1].strip() for x in table.splitlines() if x.startswith("| ")][2:]
    assert labels == ["teacher (tiny-model)", "served (tiny-model)"]
    assert any(x.startswith("[1/3]") for x in lines) and any(x.startswith("[2/3]") for x in lines)

    lines.clear()
    again = run_demo(scifact_slice, tmp_path, say=lines.append, **args)
    assert sum("up to date" in x for x in lines) == 2, lines
    assert again.rows == rows and again.table == result.table


def test_full_demo_distills_distillconfigs_default_student(
    scifact_slice: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
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
    tiny_model: Path, tiny_model_64: Path, scifact_slice: Path, tmp_path: Path
) -> None:
    port = _free_port()
    cmd = [sys.executable, "-c", "from api.cli import main; main()", "demo"]
    cmd += ["--data", str(scifact_slice), "--out", str(tmp_path), "--port", str(port)]
    cmd += ["--model", str(tiny_model), "--teacher", str(tiny_model_64)]
    env = {**os.environ, "DISTILSEARCH_DEMO_T0": str(time.time())}
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
    finally:
        proc.terminate()
        proc.wait(60)
    text = "".join(seen)
    for step in ("[1/3]", "[2/3]", "[3/3] serving", "found 10 hits", "since `make demo` started"):
        assert step in text, text
    assert (tmp_path / "quick" / "results.md").is_file()
