"""`distilsearch demo`: the product at work on a BEIR dataset (SciFact), quick or full.

Quick (the default) distils and serves something within minutes of a cold start on a
small CPU:

1. **Distil** a static student from the teacher (`distill.run.distill` with
   ``--student static``): the teacher labels a bounded sample of training texts
   (`QUICK_TEXTS`: corpus documents, their sentences, train queries, generic queries),
   model2vec distils the teacher's vocabulary and the token vectors adapt to the
   labels; the run chooses the dense weight of hybrid search on train queries.
2. **Index** the whole corpus with the student, BM25 beside it (`distilsearch index`).
3. **Compare** teacher, shipped MiniLM, the student and student + BM25 (hybrid, at
   the student's weight) on a *slice* of the test split (some queries; their relevant
   documents, BM25's top hits for each and random others), which the teacher encodes
   in minutes where the whole corpus would take it the better part of an hour on 2
   cores. Docs/s are measured in this run on the slice's documents.

The hybrid index is then served (`api.cli`).

Full (``full=True``) is the main job: distill `DistillConfig`'s default student,
index the corpus with it and compare teacher, shipped MiniLM and student on the whole
test split.

Every step is skipped when its output is up to date, and teacher labels, embeddings and
the plain static distillation are cached, so a second run reaches the server quickly.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from distill.config import DistillConfig, StudentSpec
from distill.report import REPORT, StaticReport, folder_size_mb, read_report
from distill.run import distill
from indexer.build import build_index
from search.assets import MINILM_NAME, embeddings_dir, model_hash, resolve_model
from search.atomic import atomic_write_text
from search.bm25_index import BM25Index
from search.corpus import count_documents, fingerprint, iter_documents, load_beir
from search.embed_cache import cache_for
from search.encoder import Encoder, load_encoder
from search.evaluate import corpus_texts, evaluate, evaluate_hybrid
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
QUICK_STUDENT = "static"
"""The quick demo's student: a static student with `StaticOptions`' defaults."""
QUICK_TEXTS = 1500
"""Training texts the teacher labels for the quick demo's student (``--max-texts``),
sized so that a cold ``make demo`` answers within 10 minutes on an idle 2-core CPU."""
SPEED_SAMPLE = 64
"""Documents a docs/s is measured on when the embedding cache held them all."""
STUDENT_STAMP = "student.json"
"""What the quick demo's student was distilled from, beside its folder."""
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
        serve: `api.settings.Settings` fields to serve the index with (the quick demo:
            the fusion and dense weight of hybrid search its student's run chose).
    """

    index_dir: Path
    rows: list[dict[str, Any]]
    table: str
    example_query: str
    serve: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Model:
    """A row of the table to evaluate.

    Attributes:
        role: ``teacher`` (the reference of p-values and speed ratios; first), else any.
        label: The table's name of the row.
        model: Model name or folder.
        fusion: Hybrid search with BM25 as (method, dense weight); None: dense only.
    """

    role: str
    label: str
    model: str
    fusion: tuple[str, float] | None = None


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
            f"{_p_value(p)} | {r['docs_per_s']:,.1f} | {ratio:,.1f} | "
            f"{r['query_ms']:.1f} | {r['size_mb']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def _p_value(p: float | None) -> str:
    if p is None:
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _index(model: str, data: Path, out: Path, say: Say) -> Path:
    """Index `data` with `model` (dense and BM25, as `distilsearch index` does) at `out`
    unless an index of it with that model is there."""
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


def _docs_per_s(encoder: Encoder, corpus: Corpus) -> float:
    """Documents/s of `encoder` on a seeded sample of `SPEED_SAMPLE` of `corpus`'s."""
    _, texts = corpus_texts(corpus)
    sample = random.Random(0).sample(texts, min(SPEED_SAMPLE, len(texts)))
    t0 = time.perf_counter()
    encoder.encode(sample)
    return len(sample) / (time.perf_counter() - t0)


def _report(
    spec: _Model, split: tuple[Corpus, Queries, Qrels], *, cached: bool, fresh: bool
) -> dict[str, Any]:
    """Evaluate one model on `split`, through its embedding cache when `cached`.

    With `fresh`, a docs/s the cache recorded in an earlier run is measured again now on
    a sample of the split's documents. A hybrid row's docs/s counts encoding and BM25
    indexing, as indexing for hybrid search spends both.
    """
    encoder = load_encoder(spec.model)
    cache = cache_for(encoder, embeddings_dir()) if cached else None
    if spec.fusion is None:
        report = evaluate(encoder, *split, cache=cache)
    else:
        method, weight = spec.fusion
        report = evaluate_hybrid(encoder, *split, cache=cache, method=method, weight=weight)
    if fresh and report["docs_per_s_source"] != "measured":
        report["docs_per_s"] = _docs_per_s(encoder, split[0])
        report["docs_per_s_source"] = f"measured on {SPEED_SAMPLE} of the documents"
    if spec.fusion is not None:
        bm25 = evaluate(None, *split, progress=False)["docs_per_s"]
        report["docs_per_s"] = 1 / (1 / report["docs_per_s"] + 1 / bm25)
    size = folder_size_mb(resolve_model(spec.model))
    report.update(role=spec.role, label=spec.label, size_mb=round(size, 1))
    return report


def _evaluate(
    models: list[_Model], corpus: Corpus, queries: Queries, qrels: Qrels, *, fresh: bool = False
) -> list[dict[str, Any]]:
    """Evaluate each model on the split; per-query nDCG goes into a paired test against
    the teacher's (the first row) and is then dropped.

    With `fresh`, every docs/s is measured in this run on the split's documents: only
    the teacher reads and fills its embedding cache (it is the slow one), the others
    encode the documents now.
    """
    split = (corpus, queries, qrels)
    rows = [
        _report(m, split, cached=not fresh or i == 0, fresh=fresh) for i, m in enumerate(models)
    ]
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


def _read_json(path: Path) -> dict[str, Any]:
    try:
        done = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return done if isinstance(done, dict) else {}


def _static_student(config: DistillConfig, say: Say) -> StaticReport:
    """Distill the quick demo's static student into ``config.out`` unless the student
    there was distilled by this demo with the same data, teacher and settings."""
    key = {
        "data": fingerprint(config.data),
        "teacher": model_hash(resolve_model(config.teacher)),
        "student": config.student,
        "max_texts": config.max_texts,
    }
    stamp = config.out.parent / STUDENT_STAMP
    done = _read_json(stamp)
    if (
        done.get("key") == key
        and (config.out / REPORT).is_file()
        and done.get("hash") == model_hash(config.out)
    ):
        say(f"[1/4] static student at {config.out} is up to date; skipping")
        report = read_report(config.out)
    else:
        say(
            f"[1/4] distilling the teacher {_name(config.teacher)} into a static student on "
            f"{config.data.name}: the teacher labels a sample of {config.max_texts:,} texts "
            "(corpus documents, their sentences, train queries, generic queries; cached), "
            "model2vec distils its vocabulary (cached), the token vectors adapt to the labels"
        )
        report = distill(config)
        atomic_write_text(stamp, json.dumps({"key": key, "hash": report.student_hash}))
    if not isinstance(report, StaticReport):
        raise DistilsearchError(f"{config.out} holds a {report.kind} student, not a static one")
    return report


def _distilled(report: StaticReport) -> str:
    """One line on what the static run did."""
    gate, texts = report.gate, report.texts
    after = gate.before if gate.after is None else gate.after
    sources = ", ".join(f"{n:,} {k.replace('_', ' ')}" for k, n in texts.by_source.items() if n)
    return (
        f"{texts.total:,} texts labelled ({sources}; {texts.teacher_labelled_now:,} by the "
        "teacher now); "
        f"validation nDCG@10 {gate.before:.4f} plain -> {after:.4f} {gate.emitted}; "
        f"hybrid dense weight {report.hybrid.weight:g} ({report.hybrid.method})"
    )


def _quick(
    data: Path, out: Path, config: DistillConfig, model: str, spec: SliceSpec, say: Say
) -> DemoResult:
    t0 = time.perf_counter()
    report = _static_student(config, say)
    say(f"      distilled in {_took(t0)}: {_distilled(report)}")

    t0 = time.perf_counter()
    say(
        f"[2/4] indexing {data.name} with the static student "
        "(dense and BM25, as `distilsearch index` does)"
    )
    index_dir = _index(str(config.out), data, out / "index", say)
    say(f"      indexed in {_took(t0)}")

    fusion = (report.hybrid.method, report.hybrid.weight)
    models = [
        _Model("teacher", f"teacher ({_name(config.teacher)})", config.teacher),
        _Model("baseline", f"shipped {_name(model)}", model),
        _Model("student", "static student (distilled now)", str(config.out)),
        _Model(
            "hybrid",
            f"static student + BM25 (hybrid, dense weight {fusion[1]:g})",
            str(config.out),
            fusion,
        ),
    ]
    about = (
        f"The static student was distilled in this run from the teacher's labels of "
        f"{report.texts.total:,} texts; hybrid: {fusion[0]} fusion with BM25 at the dense "
        "weight the run chose on train queries. docs/s: measured in this run on the "
        "slice's documents (hybrid: encoding plus BM25 indexing)."
    )
    rows, table, example = _compare(data, out, models, spec, about, say)
    serve = {"hybrid_fusion": fusion[0], "hybrid_weight": fusion[1]}
    return DemoResult(index_dir, rows, table, example, serve)


def _compare(
    data: Path, out: Path, models: list[_Model], spec: SliceSpec, about: str, say: Say
) -> tuple[list[dict[str, Any]], str, str]:
    """Evaluate `models` on a slice of the test split unless ``results.json`` holds
    their results on it; return (rows, table, a test query of the slice)."""
    t0 = time.perf_counter()
    corpus, queries, qrels = load_beir(data, "test")
    sub_corpus, sub_queries, sub_qrels = sample_slice(corpus, queries, qrels, spec)
    caption = (
        f"{data.name} test, a slice: {len(sub_queries)} of {len(qrels)} queries, "
        f"{len(sub_corpus)} of {len(corpus)} documents (their relevant ones, BM25's top "
        f"{spec.hard_per_query} for each query, random others; seed {spec.seed}). {about} "
        "Slice scores are higher than whole-corpus ones and noisy at this size; the whole "
        "split: `distilsearch demo --full`."
    )
    say(
        f"[3/4] comparing {', '.join(m.label for m in models)} on a slice: "
        f"{len(sub_queries)} test queries, {len(sub_corpus)} documents for the teacher to "
        "encode (cached afterwards)"
    )
    key = {
        "data": fingerprint(data),
        "slice": asdict(spec),
        "models": [[model_hash(resolve_model(m.model)), m.fusion] for m in models],
    }
    done = _read_json(out / RESULTS_JSON)
    if json.loads(json.dumps(key)) == done.get("key"):
        say(f"      {out / RESULTS_JSON} is up to date; skipping")
        rows = done["rows"]
        table = format_table(rows, caption)
    else:
        rows = _evaluate(models, sub_corpus, sub_queries, sub_qrels, fresh=True)
        table = format_table(rows, caption)
        _write(out, {"mode": "quick", "key": key, "rows": rows}, table)
        say(f"      compared in {_took(t0)}")
    return rows, table, next(iter(sub_queries.values()))


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
            _Model("teacher", f"teacher ({_name(teacher_name)})", teacher_name),
            _Model("baseline", f"shipped {MINILM_NAME}", MINILM_NAME),
            _Model("student", f"student ({default.student}, distilled)", str(student)),
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
    student: str = QUICK_STUDENT,
    max_texts: int = QUICK_TEXTS,
    spec: SliceSpec | None = None,
    say: Say = logger.info,
) -> DemoResult:
    """Distill, index, compare and write ``results.json`` and ``results.md``; return
    what to serve.

    Args:
        data: A BEIR folder with a test split.
        out: Output root: the quick demo writes ``out/quick/`` (``student/``,
            ``index/`` and the results), the full one ``out/``.
        full: Distill `DistillConfig`'s default student and evaluate on the whole split
            instead.
        model: Quick demo: the shipped model the table compares with.
        teacher: The teacher (default `DistillConfig`'s).
        max_minutes: Full demo: training budget (default `DistillConfig`'s).
        student: Quick demo: the static student's ``--student`` spec.
        max_texts: Quick demo: training texts the teacher labels for the student.
        spec: Quick demo: the slice (default `SliceSpec()`).
        say: Receives one progress line per step.

    Raises:
        ValueError: `student` is not a static student spec, or a distillation setting
            is bad.
    """
    out = out.resolve()
    if full:
        return _full(data, out, teacher=teacher, max_minutes=max_minutes, say=say)
    if StudentSpec.parse(student).static is None:
        raise ValueError(
            f"student {student!r}: the quick demo distils a static student "
            "(static or static:KEY=VALUE,...); --full distils a transformer student"
        )
    quick = out / "quick"
    config = DistillConfig(data=data, out=quick / "student", student=student, max_texts=max_texts)
    if teacher is not None:
        config = replace(config, teacher=teacher)
    return _quick(data, quick, config, model, spec or SliceSpec(), say)


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
