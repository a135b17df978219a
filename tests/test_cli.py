import dataclasses
import json
import subprocess
from pathlib import Path

import typer.main
from typer.testing import CliRunner

from api.cli import app
from distill.config import DistillConfig
from indexer.options import BuildOptions

runner = CliRunner()


def _err_line(result) -> str:  # type: ignore[no-untyped-def]
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_missing_data_exits_2_with_one_line(tmp_path: Path) -> None:
    r = runner.invoke(app, ["eval", "--model", "bm25", "--data", str(tmp_path / "nope")])
    assert r.exit_code == 2
    assert _err_line(r).startswith("error: --data") and "no such file" in r.stderr


def test_unknown_model_exits_2(scifact_slice: Path) -> None:
    r = runner.invoke(app, ["eval", "--model", "not-a-model", "--data", str(scifact_slice)])
    assert r.exit_code == 2 and "unknown model 'not-a-model'" in _err_line(r)


def test_search_on_a_folder_that_is_no_index(tmp_path: Path) -> None:
    r = runner.invoke(app, ["search", "--index", str(tmp_path), "hello"])
    assert r.exit_code == 2 and "not an index folder" in _err_line(r)


def test_bad_factory_and_bad_k(tiny_model: Path, small_jsonl: Path, tmp_path: Path) -> None:
    r = runner.invoke(
        app,
        [
            "index",
            "--model",
            str(tiny_model),
            "--data",
            str(small_jsonl),
            "--out",
            str(tmp_path / "i"),
            "--factory",
            "Bogus",
        ],
    )
    assert r.exit_code == 2 and "FAISS cannot build factory string 'Bogus'" in _err_line(r)
    r = runner.invoke(app, ["search", "--index", str(tmp_path / "i"), "x", "-k", "0"])
    assert r.exit_code == 2 and "-k must be at least 1" in _err_line(r)


def test_index_search_eval_json(tiny_model: Path, scifact_slice: Path, tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    r = runner.invoke(
        app, ["index", "--model", str(tiny_model), "--data", str(scifact_slice), "--out", str(idx)]
    )
    assert r.exit_code == 0, r.output
    assert "indexed" in r.stdout
    r = runner.invoke(app, ["search", "--index", str(idx), "cancer risk", "-k", "3", "--json"])
    assert r.exit_code == 0, r.output
    found = json.loads(r.stdout)
    hits = found["hits"]
    assert len(hits) == 3 and {"id", "score", "title", "snippet"} <= set(hits[0])
    assert found["mode"] == "hybrid"  # the index has BM25
    r = runner.invoke(
        app, ["eval", "--model", str(tiny_model), "--data", str(scifact_slice), "--json"]
    )
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    for key in (
        "ndcg@10",
        "recall@100",
        "map@100",
        "mrr@10",
        "num_queries",
        "num_docs",
        "model",
        "docs_per_s",
    ):
        assert key in report
    assert report["num_queries"] == 20
    # Second run: corpus from the cache, docs/s from the cache's timing.
    again = json.loads(
        runner.invoke(
            app, ["eval", "--model", str(tiny_model), "--data", str(scifact_slice), "--json"]
        ).stdout
    )
    assert again["ndcg@10"] == report["ndcg@10"] and again["docs_per_s_source"] == "cache"
    # The text table says so too.
    r = runner.invoke(app, ["eval", "--model", str(tiny_model), "--data", str(scifact_slice)])
    assert r.exit_code == 0, r.output
    assert f"{again['docs_per_s']:.1f}*" in r.stdout and "from the embedding cache" in r.stdout


def test_distill_refuses_an_int8_cosine_above_one(scifact_slice: Path, tmp_path: Path) -> None:
    args = ["distill", "--student", "all-MiniLM-L6-v2", "--data", str(scifact_slice)]
    r = runner.invoke(app, [*args, "--out", str(tmp_path / "s"), "--int8-min-cosine", "1.5"])
    assert r.exit_code == 2 and "--int8-min-cosine must be in (0, 1]" in _err_line(r)


def test_option_defaults_are_the_settings_classes_defaults() -> None:
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    for command, settings, renamed in (
        ("distill", DistillConfig, {}),
        ("index", BuildOptions, {"on_disk": "ondisk"}),
    ):
        given = {renamed.get(p.name, p.name): p.default for p in commands[command].params}
        shared = [
            f
            for f in dataclasses.fields(settings)
            if f.name in given and f.default is not dataclasses.MISSING
        ]
        assert len(shared) >= 8
        for field in shared:
            assert given[field.name] == field.default, (command, field.name)
    data = next(p for p in commands["distill"].params if p.name == "data")
    assert data.required  # no default to take


def test_index_prints_no_library_debug_lines(
    distilsearch_cmd: list[str], tiny_model: Path, small_jsonl: Path, tmp_path: Path
) -> None:
    """A fresh process, as a user runs it: bm25s sets its own logger to DEBUG when it
    is imported, after the command chose the levels."""
    args = ["index", "--model", str(tiny_model), "--data", str(small_jsonl)]
    r = subprocess.run(
        [*distilsearch_cmd, *args, "--out", str(tmp_path / "idx")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "indexed into" in r.stdout
    assert "DEBUG" not in r.stdout + r.stderr, r.stderr


def test_search_defaults_to_dense_without_bm25(
    tiny_model: Path, small_jsonl: Path, tmp_path: Path
) -> None:
    idx = tmp_path / "idx"
    args = ["--model", str(tiny_model), "--data", str(small_jsonl), "--out", str(idx)]
    assert runner.invoke(app, ["index", *args, "--no-bm25"]).exit_code == 0
    r = runner.invoke(app, ["search", "--index", str(idx), "young cat", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["mode"] == "dense", r.output
    r = runner.invoke(app, ["search", "--index", str(idx), "young cat", "--mode", "hybrid"])
    assert r.exit_code == 2 and "no BM25 index" in _err_line(r)
    r = runner.invoke(app, ["search", "--index", str(idx), "young cat", "--mode", "fuzzy"])
    assert r.exit_code == 2 and "not one of dense, bm25, hybrid" in _err_line(r)


def _corrupt(file: Path) -> None:
    """Cut a file to half and overwrite its start: what a broken copy leaves."""
    data = file.read_bytes()
    file.write_bytes(b"\x00garbage\x00" * 8 + data[64 : len(data) // 2])


def test_a_model_with_broken_weights_is_one_line_in_every_command(
    tiny_model: Path, small_jsonl: Path, scifact_slice: Path, tmp_path: Path
) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    _corrupt(broken / "model.safetensors")
    out = str(tmp_path / "idx")
    for args in (
        ["index", "--model", str(broken), "--data", str(small_jsonl), "--out", out],
        ["eval", "--model", str(broken), "--data", str(scifact_slice)],
        ["distill", "--student", str(broken), "--teacher", str(broken), "--data",
         str(scifact_slice), "--out", str(tmp_path / "s")],
    ):  # fmt: skip
        r = runner.invoke(app, args)
        line = _err_line(r)
        assert r.exit_code == 2, (args[0], r.output)
        assert str(broken) in line and "cannot be loaded" in line, (args[0], line)


def test_a_corrupt_index_file_is_one_line(
    tiny_index,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    docs = [(f"d{i}", "", f"document number {i} about cells") for i in range(40)]
    folder = tiny_index(docs, tmp_path / "idx")
    _corrupt(folder / "index.faiss")
    r = runner.invoke(app, ["search", "--index", str(folder), "cells"])
    line = _err_line(r)
    assert r.exit_code == 2 and "index.faiss" in line and "rebuild it" in line, line
