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

pytestmark = pytest.mark.slow


def test_distill_index_search_eval_serve(scifact_slice: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    student = tmp_path / "student"
    r = runner.invoke(
        cli,
        [
            "distill",
            "--teacher",
            "all-mpnet-base-v2",
            "--student",
            "all-MiniLM-L6-v2",
            "--data",
            str(scifact_slice),
            "--out",
            str(student),
            "--max-texts",
            "48",
            "--batch-size",
            "8",
            "--max-minutes",
            "3",
        ],
    )
    assert r.exit_code == 0, r.output
    report = json.loads((student / "distill_report.json").read_text())
    assert report["steps"] > 0 and report["speed_ratio"] > 1.5
    gate = report["gate"]
    assert gate["source"] == "teacher top-10"  # the slice has no train qrels
    assert gate["after"] >= gate["before"] or gate["emitted"] == "initial"
    assert (student / "onnx" / "model.onnx").is_file()  # exported and checked against torch

    idx = tmp_path / "idx"
    r = runner.invoke(
        cli, ["index", "--model", str(student), "--data", str(scifact_slice), "--out", str(idx)]
    )
    assert r.exit_code == 0, r.output

    r = runner.invoke(
        cli, ["eval", "--model", str(student), "--data", str(scifact_slice), "--json"]
    )
    assert r.exit_code == 0, r.output
    student_eval = json.loads(r.stdout)
    r = runner.invoke(
        cli, ["eval", "--model", "all-mpnet-base-v2", "--data", str(scifact_slice), "--json"]
    )
    teacher_eval = json.loads(r.stdout)
    # On 80 documents both should find most relevant documents.
    assert teacher_eval["ndcg@10"] > 0.6 and student_eval["ndcg@10"] > 0.5
    assert student_eval["docs_per_s"] > teacher_eval["docs_per_s"]

    query = json.loads((scifact_slice / "queries.jsonl").read_text().splitlines()[0])
    with TestClient(create_app(Settings(index_dir=idx))) as client:
        body = client.post("/search", json={"query": query["text"], "k": 5}).json()
    assert len(body["hits"]) == 5
    relevant = {
        line.split("\t")[1]
        for line in (scifact_slice / "qrels" / "test.tsv").read_text().splitlines()[1:]
        if line.split("\t")[0] == query["_id"]
    }
    assert relevant & {h["id"] for h in body["hits"]}
