"""The main job on a BEIR dataset: distill a student, index the corpus, compare teacher,
shipped MiniLM and student on the test split. Every step is cached or skipped when its
output already exists, so a second run reaches the server in minutes."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distill.config import DistillConfig
from distill.run import REPORT, distill, folder_size_mb
from indexer.build import build_index
from search.assets import MINILM_NAME, TEACHER_NAME, embeddings_dir, resolve_model
from search.atomic import atomic_write_text
from search.corpus import iter_documents, load_beir
from search.embed_cache import cache_for
from search.encoder import load_encoder
from search.evaluate import evaluate
from search.index_folder import read_index_manifest
from search.types import DistilsearchError

logger = logging.getLogger(__name__)


def _student(data: Path, out: Path, max_minutes: float) -> Path:
    report = out / REPORT
    if report.is_file():
        done = json.loads(report.read_text())
        if (
            done.get("data") == str(data)
            and done.get("config", {}).get("max_minutes") == max_minutes
        ):
            logger.info("student already distilled at %s; skipping", out)
            return out
    print(
        f"[1/4] distilling {TEACHER_NAME} into {MINILM_NAME} on {data.name} "
        f"(teacher labels are cached; training budget {max_minutes:g} min)",
        flush=True,
    )
    distill(
        DistillConfig(
            teacher=TEACHER_NAME, student=MINILM_NAME, data=data, out=out, max_minutes=max_minutes
        )
    )
    return out


def _index(student: Path, data: Path, out: Path) -> Path:
    encoder = load_encoder(student)
    try:
        if read_index_manifest(out)["model"]["hash"] == encoder.model_hash:
            logger.info("index at %s is up to date; skipping", out)
            return out
    except DistilsearchError:
        pass
    print(f"[2/4] indexing {data.name} with the student", flush=True)
    total = sum(1 for _ in iter_documents(data))
    cache = cache_for(encoder, embeddings_dir())
    build_index(
        encoder, iter_documents(data), out, cache=cache, model_path=str(student), total=total
    )
    return out


def run_demo(
    data: Path,
    out: Path,
    *,
    max_minutes: float = 20.0,
    print_table: Callable[[list[dict[str, Any]]], None] | None = None,
) -> Path:
    """Distill, index and evaluate; write ``out/results.json``; return the index folder."""
    out = out.resolve()
    student = _student(data, out / "student", max_minutes)
    index_dir = _index(student, data, out / "index")
    print("[3/4] evaluating teacher, shipped MiniLM and the student on the test split", flush=True)
    corpus, queries, qrels = load_beir(data, "test")
    rows = []
    for label, spec in (
        (TEACHER_NAME, TEACHER_NAME),
        (MINILM_NAME, MINILM_NAME),
        ("student (distilled MiniLM)", str(student)),
    ):
        encoder = load_encoder(spec)
        cache = cache_for(encoder, embeddings_dir())
        report = evaluate(encoder, corpus, queries, qrels, cache=cache)
        report.pop("per_query_ndcg@10")
        report["model"] = label
        report["size_mb"] = round(folder_size_mb(resolve_model(spec)), 1)
        rows.append(report)
    atomic_write_text(out / "results.json", json.dumps(rows, indent=2) + "\n")
    print("[4/4] results (also in results.json):", flush=True)
    if print_table is not None:
        print_table(rows)
    return index_dir
