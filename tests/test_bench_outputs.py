"""bench/modes.py, encode.py, compress.py and index_scale.py: a tiny run of each writes
``results.json`` with the run's provenance and a ``table.md`` headed by it
(bench/load.py's runs are checked in test_load_bench.py)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parents[1] / "bench"


def run_bench(script: str, out: Path, *args: str, timeout: int = 300) -> dict[str, Any]:
    """Run ``bench/<script>`` with `args` and ``--out out``; check that ``results.json``
    records the command, commit, date, machine and idleness, and that ``table.md``'s
    first line names the same commit; return ``results.json``."""
    cmd = [sys.executable, str(BENCH / script), "--out", str(out), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert f"wrote {out}/results.json, table.md" in done.stdout
    got: dict[str, Any] = json.loads((out / "results.json").read_text())
    prov = got["provenance"]
    assert script in prov["command"] and str(out) in prov["command"]
    assert prov["commit"] and prov["commit"] != "unknown"
    assert dt.datetime.fromisoformat(prov["date"]).tzinfo is not None
    assert isinstance(prov["idle"], bool) and prov["wall_seconds"] > 0
    assert prov["machine"]["cores"] >= 1
    heading, *rest = (out / "table.md").read_text().splitlines()
    assert f"commit {prov['commit']}" in heading and "idle" in heading
    assert any(line.startswith("| ") for line in rest), "table.md holds a Markdown table"
    return got


def test_modes_writes_each_modes_latency(
    tiny_index: Callable[..., Path], scifact_slice: Path, tmp_path: Path
) -> None:
    from search.corpus import iter_documents

    index = tiny_index(list(iter_documents(scifact_slice)), tmp_path / "index")

    got = run_bench(
        "modes.py", tmp_path / "out", "--index", str(index), "--data", str(scifact_slice),
        "--n", "5",
    )  # fmt: skip

    assert set(got["modes"]) == {"dense", "bm25", "hybrid"}
    assert all(m["median_ms"] > 0 and m["p95_ms"] >= m["median_ms"] for m in got["modes"].values())
    assert got["settings"]["queries"] == 5 and got["settings"]["hybrid"]
    assert got["hybrid_over_dense_median"] > 0


def test_encode_writes_both_rates_and_their_ratio(
    tiny_model: Path, scifact_slice: Path, tmp_path: Path
) -> None:
    got = run_bench(
        "encode.py", tmp_path / "out", "--teacher", str(tiny_model), "--student",
        str(tiny_model), "--backend", "torch", "--data", str(scifact_slice), "--n", "8",
    )  # fmt: skip

    teacher, student = got["rows"]
    assert (teacher["role"], student["role"]) == ("teacher", "student")
    assert teacher["docs_per_s"] > 0 and student["docs_per_s"] > 0
    ratio = student["docs_per_s"] / teacher["docs_per_s"]
    assert abs(got["student_over_teacher"] - ratio) < 1e-9
    assert got["settings"]["passages"] == 8


def test_compress_writes_its_rows_and_reports(
    tiny_model: Path, scifact_slice: Path, tmp_path: Path
) -> None:
    got = run_bench(
        "compress.py", tmp_path / "out", "--model", str(tiny_model), "--data",
        str(scifact_slice), "--dims", "16", "--queries", "5", "--corpus", "30",
        "--speed-docs", "16", "--check-texts", "16", "--pca-texts", "40",
        "--work", str(tmp_path / "work"), timeout=600,
    )  # fmt: skip

    variants = [r["variant"] for r in got["rows"]]
    assert variants[:2] == ["torch", "onnx"] and any(v.startswith("d16") for v in variants)
    assert all(r["docs_per_s"] > 0 for r in got["rows"])
    assert [r["variant"] for r in got["pca"]] == ["d16"]
    assert {"export", "int8", "d16"} <= set(got["reports"])


def test_index_scale_writes_every_factory(tmp_path: Path) -> None:
    got = run_bench(
        "index_scale.py", tmp_path / "out", "--n", "3000", "--dim", "16", "--queries", "20",
        "--memory", "1GB", "--factories", "Flat", "IVF16,Flat", "--work", str(tmp_path / "work"),
    )  # fmt: skip

    rows = {r["factory"]: r for r in got["rows"]}
    assert set(rows) == {"Flat", "IVF16,Flat"}
    assert rows["Flat"]["recall"] == 1.0 and all(0 < r["recall"] <= 1 for r in rows.values())
    assert got["settings"]["auto"] == "Flat"
    assert "**Flat** (auto)" in (tmp_path / "out" / "table.md").read_text()


def test_distill_run_records_time_memory_and_the_report(
    tiny_model: Path, tiny_model_64: Path, scifact_slice: Path, tmp_path: Path
) -> None:
    student = tmp_path / "static"
    got = run_bench(
        "distill_run.py", tmp_path / "out", "--", "--data", str(scifact_slice), "--out",
        str(student), "--teacher", str(tiny_model_64), "--student", "static:epochs=1,batch=8",
        "--max-texts", "60", timeout=600,
    )  # fmt: skip

    report = json.loads((student / "distill_report.json").read_text())
    assert json.loads((tmp_path / "out" / "distill_report.json").read_text()) == report
    assert got["emitted"] == "static" and got["texts"] == report["texts"]["total"]
    assert got["wall_seconds"] >= report["wall_seconds"] > 0
    assert 0.1 < got["peak_rss_gib"] < 24  # a torch process, and no more than the machine
    assert "--max-texts 60" in got["distill_command"]
