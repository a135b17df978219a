"""`distilsearch demo`: the product at work on a BEIR dataset (SciFact), quick or full.

Quick (the default) fits a cold start on a small CPU: the shipped small model indexes
the whole corpus and is served, and it is compared with the teacher on a *slice* of
the test split (some queries; their relevant documents, BM25's top hits for each and
random others), which the teacher encodes in minutes where the whole corpus would take
it the better part of an hour on 2 cores.

Full (``full=True``) is the main job: distill `DistillConfig`'s default student,
index the corpus with it and compare teacher, shipped MiniLM and student on the whole
test split.

Every step is skipped when its output is up to date, and embeddings are cached, so a
second run reaches the server quickly.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from distill.config import DistillConfig
from distill.report import REPORT, folder_size_mb
from distill.run import distill
from indexer.build import build_index
from search.assets import MINILM_NAME, embeddings_dir, model_hash, resolve_model
from search.atomic import atomic_write_text
from search.bm25_index import BM25Index
from search.corpus import count_documents, fingerprint, iter_documents, load_beir
from search.embed_cache import cache_for
from search.encoder import load_encoder
from search.evaluate import corpus_texts, evaluate
from search.index_folder import read_index_manifest
from search.significance import paired_test
from search.types import Corpus, DistilsearchError, Qrels, Queries

logger = logging.getLogger(__name__)

__all__ = [
    "DemoResult",
    "SliceSpec",
    "format_duration",
    "format_table",
    "run_demo",
    "sample_slice",
    "wait_until_answering",
]

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
Say = Callable[[str], None]


@dataclass(frozen=True)
class SliceSpec:
    """Which part of the test split the quick demo compares teacher and student on.

    Attributes:
        queries: Test queries sampled (all of them when there are fewer).
        docs: Documents in the sub-corpus: every relevant document of those queries,
            then BM25's top `hard_per_query` for each query (lexical near-misses, which
            neither dense model chose), then random others up to `docs`.
        hard_per_query: BM25 hits added per query.
        seed: Seed of both samples.
    """

    queries: int = 100
    docs: int = 500
    hard_per_query: int = 3
    seed: int = 0


@dataclass(frozen=True)
class DemoResult:
    """What a demo run made.

    Attributes:
        index_dir: The index folder to serve.
        rows: One evaluation report per model, with ``role`` and ``label``.
        table: The results as a Markdown table with its caption.
        example_query: A test query to check the service with.
    """

    index_dir: Path
    rows: list[dict[str, Any]]
    table: str
    example_query: str


def sample_slice(
    corpus: Corpus, queries: Queries, qrels: Qrels, spec: SliceSpec
) -> tuple[Corpus, Queries, Qrels]:
    """A seeded sub-sample of a BEIR split (the inputs are not modified).

    Returns:
        (corpus, queries, qrels) of the slice: `spec.queries` judged queries, and
        every document relevant to them plus BM25 near-misses and random others, up to
        `spec.docs` documents (more only when the relevant ones alone are more).
    """
    rng = random.Random(spec.seed)
    judged = sorted(q for q in queries if q in qrels)
    qids = sorted(rng.sample(judged, min(spec.queries, len(judged))))
    keep = dict.fromkeys(d for q in qids for d in sorted(qrels[q]) if d in corpus)
    doc_ids, texts = corpus_texts(corpus)
    if spec.hard_per_query > 0:
        bm25 = BM25Index.build(texts)
        for q in qids:
            rows, _ = bm25.search(queries[q], spec.hard_per_query)
            for row in rows:
                if len(keep) >= spec.docs:
                    break
                keep.setdefault(doc_ids[int(row)])
    rest = [d for d in doc_ids if d not in keep]
    for d in rng.sample(rest, max(0, min(spec.docs - len(keep), len(rest)))):
        keep.setdefault(d)
    return (
        {d: dict(corpus[d]) for d in doc_ids if d in keep},
        {q: queries[q] for q in qids},
        {q: dict(qrels[q]) for q in qids},
    )


def format_table(rows: list[dict[str, Any]], caption: str) -> str:
    """The rows as a Markdown table (quality, speed, size) under `caption`."""
    teacher = next((r for r in rows if r["role"] == "teacher"), None)
    head = "| model | nDCG@10 | Recall@100 | p vs teacher | docs/s | × teacher | query ms | MB |"
    lines = [caption, "", head, "| --- |" + " ---: |" * 7]
    for r in rows:
        ratio = r["docs_per_s"] / teacher["docs_per_s"] if teacher else float("nan")
        p = r.get("p_vs_teacher")
        lines.append(
            f"| {r['label']} | {r['ndcg@10']:.4f} | {r['recall@100']:.4f} | "
            f"{'–' if p is None else f'{p:.3f}'} | {r['docs_per_s']:.1f} | {ratio:.1f} | "
            f"{r['query_ms']:.1f} | {r['size_mb']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def _index(model: str, data: Path, out: Path, say: Say) -> Path:
    """Index `data` with `model` at `out` unless an index of it with that model is there."""
    encoder = load_encoder(model)
    total = count_documents(data)
    try:
        manifest = read_index_manifest(out)
        if manifest["model"]["hash"] == encoder.model_hash and manifest["count"] == total:
            say(f"      index at {out} is up to date; skipping")
            return out
    except DistilsearchError:
        pass
    build_index(
        encoder,
        iter_documents(data),
        out,
        cache=cache_for(encoder, embeddings_dir()),
        model_path=str(resolve_model(model)),
        total=total,
        resume_key=fingerprint(data),
    )
    return out


def _evaluate(
    models: list[tuple[str, str, str]], corpus: Corpus, queries: Queries, qrels: Qrels
) -> list[dict[str, Any]]:
    """Evaluate each (role, label, model) on the split; per-query nDCG goes into a
    paired test against the teacher's (the first row) and is then dropped."""
    rows = []
    for role, label, spec in models:
        encoder = load_encoder(spec)
        report = evaluate(
            encoder, corpus, queries, qrels, cache=cache_for(encoder, embeddings_dir())
        )
        report.update(role=role, label=label, size_mb=round(folder_size_mb(resolve_model(spec)), 1))
        rows.append(report)
    reference = rows[0]["per_query_ndcg@10"]
    for row in rows[1:]:
        row["p_vs_teacher"] = paired_test(row["per_query_ndcg@10"], reference).p_value
    for row in rows:
        row.pop("per_query_ndcg@10")
    return rows


def _write(out: Path, summary: dict[str, Any], table: str) -> None:
    atomic_write_text(out / RESULTS_JSON, json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / RESULTS_MD, table)


def _name(model: str) -> str:
    """A model's name for a table: a folder's own name, not its path."""
    return Path(model).name if Path(model).exists() else model


def format_duration(seconds: float) -> str:
    """``"12 min 5 s"``."""
    return f"{seconds // 60:.0f} min {seconds % 60:.0f} s"


def _took(t0: float) -> str:
    return format_duration(time.perf_counter() - t0)


def _quick(
    data: Path, out: Path, *, model: str, teacher: str, spec: SliceSpec, say: Say
) -> DemoResult:
    t0 = time.perf_counter()
    say(f"[1/3] indexing {data.name} with {_name(model)} (a shipped small model; no training)")
    index_dir = _index(model, data, out / "index", say)
    say(f"      indexed in {_took(t0)}")

    t0 = time.perf_counter()
    corpus, queries, qrels = load_beir(data, "test")
    sub_corpus, sub_queries, sub_qrels = sample_slice(corpus, queries, qrels, spec)
    caption = (
        f"{data.name} test, a slice: {len(sub_queries)} of {len(qrels)} queries, "
        f"{len(sub_corpus)} of {len(corpus)} documents (their relevant ones, BM25's top "
        f"{spec.hard_per_query} for each query, random others; seed {spec.seed}). Slice "
        "scores are higher than whole-corpus ones and noisy at this size; the whole "
        "split: `distilsearch demo --full`."
    )
    say(
        f"[2/3] comparing the teacher {_name(teacher)} with {_name(model)} on a slice: "
        f"{len(sub_queries)} test queries, {len(sub_corpus)} documents for the teacher to "
        "encode (cached afterwards)"
    )
    key = {
        "data": fingerprint(data),
        "slice": asdict(spec),
        "models": {m: model_hash(resolve_model(m)) for m in (teacher, model)},
    }
    done = out / RESULTS_JSON
    if done.is_file() and json.loads(done.read_text()).get("key") == key:
        say(f"      {done} is up to date; skipping")
        rows = json.loads(done.read_text())["rows"]
        table = format_table(rows, caption)
    else:
        rows = _evaluate(
            [
                ("teacher", f"teacher ({_name(teacher)})", teacher),
                ("student", f"served ({_name(model)})", model),
            ],
            sub_corpus,
            sub_queries,
            sub_qrels,
        )
        table = format_table(rows, caption)
        _write(out, {"mode": "quick", "key": key, "rows": rows}, table)
        say(f"      compared in {_took(t0)}")
    return DemoResult(index_dir, rows, table, next(iter(sub_queries.values())))


def _student(
    data: Path, out: Path, teacher: str | None, max_minutes: float | None, say: Say
) -> Path:
    """Distill DistillConfig's default student unless one from the same settings is there."""
    given: dict[str, Any] = {"teacher": teacher, "max_minutes": max_minutes}
    config = DistillConfig(data=data, out=out, **{k: v for k, v in given.items() if v is not None})
    report = out / REPORT
    if report.is_file():
        done = json.loads(report.read_text())
        made = (done.get("data"), done.get("student"), done.get("teacher"))
        budget = done.get("config", {}).get("max_minutes")
        if made == (str(data), config.student, config.teacher) and budget == config.max_minutes:
            say(f"[1/4] student already distilled at {out}; skipping")
            return out
    say(
        f"[1/4] distilling {config.teacher} into {config.student} on {data.name} "
        f"(training budget {config.max_minutes:g} min; the teacher labels the training "
        "texts first, which is slow on a CPU and cached)"
    )
    distill(config)
    return out


def _full(
    data: Path, out: Path, *, teacher: str | None, max_minutes: float | None, say: Say
) -> DemoResult:
    default = DistillConfig(data=data, out=out / "student")
    t0 = time.perf_counter()
    student = _student(data, out / "student", teacher, max_minutes, say)
    say(f"      distilled in {_took(t0)}")
    say(f"[2/4] indexing {data.name} with the student")
    t0 = time.perf_counter()
    index_dir = _index(str(student), data, out / "index", say)
    say(f"      indexed in {_took(t0)}")
    say("[3/4] evaluating teacher, shipped MiniLM and the student on the whole test split")
    t0 = time.perf_counter()
    corpus, queries, qrels = load_beir(data, "test")
    teacher_name = teacher or default.teacher
    rows = _evaluate(
        [
            ("teacher", f"teacher ({_name(teacher_name)})", teacher_name),
            ("baseline", f"shipped {MINILM_NAME}", MINILM_NAME),
            ("student", f"student ({default.student}, distilled)", str(student)),
        ],
        corpus,
        queries,
        qrels,
    )
    caption = f"{data.name} test, whole split: {len(qrels)} queries, {len(corpus)} documents."
    table = format_table(rows, caption)
    _write(out, {"mode": "full", "rows": rows}, table)
    say(f"      evaluated in {_took(t0)}")
    example = next(q for q in queries.values())
    return DemoResult(index_dir, rows, table, example)


def run_demo(
    data: Path,
    out: Path,
    *,
    full: bool = False,
    model: str = MINILM_NAME,
    teacher: str | None = None,
    max_minutes: float | None = None,
    spec: SliceSpec | None = None,
    say: Say = logger.info,
) -> DemoResult:
    """Index, compare and write ``results.json`` and ``results.md``; return what to serve.

    Args:
        data: A BEIR folder with a test split.
        out: Output root: the quick demo writes ``out/quick/``, the full one ``out/``
            (``student/``, ``index/`` and the results).
        full: Distill a student and evaluate on the whole split instead.
        model: Quick demo: the model that indexes and serves the corpus.
        teacher: The teacher (default `DistillConfig`'s).
        max_minutes: Full demo: training budget (default `DistillConfig`'s).
        spec: Quick demo: the slice (default `SliceSpec()`).
        say: Receives one progress line per step.
    """
    out = out.resolve()
    if full:
        return _full(data, out, teacher=teacher, max_minutes=max_minutes, say=say)
    teacher = teacher or DistillConfig(data=data, out=out).teacher
    quick = out / "quick"
    return _quick(data, quick, model=model, teacher=teacher, spec=spec or SliceSpec(), say=say)


def wait_until_answering(url: str, query: str, *, timeout_s: float = 600.0) -> int:
    """Poll `url` until its search page loads and a search for `query` answers.

    Returns:
        The number of hits the search returned.

    Raises:
        TimeoutError: no answer within `timeout_s`.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            page = httpx.get(url + "/", timeout=10)
            hits = httpx.post(url + "/search", json={"query": query, "k": 10}, timeout=30)
            if page.status_code == 200 and hits.status_code == 200:
                return len(hits.json()["hits"])
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer a search within {timeout_s:g} s")
        time.sleep(0.5)
