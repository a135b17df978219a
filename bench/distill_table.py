"""The distillation comparison table on a BEIR folder, in one run.

    python bench/distill_table.py --model teacher=all-mpnet-base-v2 \
        --model minilm=all-MiniLM-L6-v2 --model student=runs/demo/student \
        --model student+int8=runs/demo/student@onnx-int8 [--dims 256] [--out bench/out]

For each model: nDCG@10 and Recall@100 on the test split (corpus embeddings through
the embedding cache), corpus docs/s and single-query ms measured now on the same
passages and queries for every model (batched as its encoder batches: at most 32
texts and 512 padded tokens a call), size on disk, and a paired test of per-query
nDCG@10 against the first model (the teacher): mean difference, 95 % bootstrap
interval, permutation p-value. Writes table.md, results.json and pareto.png.

With ``--dims N`` the last model (or ``--dims-of LABEL``) also gets a row with its
output reduced to N dimensions by PCA (`distill.compress.dims.reduce_dims`), fitted on corpus
documents and *train* queries, never test queries; when that row's backend is ONNX the
reduced copy is exported (and, for ``onnx-int8``, quantized behind the cosine gate)
so it is compared artifact for artifact. ``--int8-of LABEL`` adds an ONNX int8 copy
of that model (exported and quantized as students are, behind the cosine gate), e.g.
the shipped baseline, to show what compression alone buys.

A static student (``distill --student static``) is a row like any other
(``--model static=runs/static@static``). ``--bm25`` adds BM25 alone, and
``--hybrid LABEL`` a row of that model fused with BM25 (`search.hybrid`, convex) at
the dense weight its ``distill_report.json`` chose on the train split (else the
default; ``--hybrid LABEL=0.3`` sets it). BM25 rows count its indexing in docs/s and
its search in query ms, measured on the same passages and queries.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

from provenance import Provenance

from distill.report import REPORT, StaticReport, read_report
from search.assets import cache_dir, embeddings_dir, resolve_model
from search.bm25_index import BM25Index
from search.corpus import load_beir
from search.embed_cache import cache_for
from search.encoder import Encoder, load_encoder
from search.evaluate import corpus_texts, evaluate, evaluate_hybrid
from search.hybrid import DEFAULT_WEIGHT
from search.significance import paired_test

_Y_SPAN = 0.25  # nDCG@10 below the best shown to scale (a static row sits ~0.1 below hybrids)
DEFAULT_DATA = Path(os.environ.get("DISTILSEARCH_DATA", "../shared/data/beir")) / "scifact"


def size_mb(folder: Path, backend: str) -> float:
    """Bytes the chosen artifact needs: the ONNX file, or the torch weights + config."""
    if backend == "onnx-int8":
        return (folder / "onnx" / "model_int8.onnx").stat().st_size / 2**20
    if backend == "onnx":
        return sum(p.stat().st_size for p in (folder / "onnx").glob("model.onnx*")) / 2**20
    halve = 2 if backend == "torch-bf16" else 1  # bf16 weights: half the fp32 bytes
    return (
        sum(
            p.stat().st_size
            for p in folder.rglob("*")
            if p.is_file() and not {"onnx", ".git"} & set(p.relative_to(folder).parts)
        )
        / 2**20
        / halve
    )


def open_encoder(spec: str, backend: str) -> Encoder:
    """The encoder of a row: ``torch`` in fp32, ``torch-bf16`` with bf16 weights, else
    the backend named."""
    if backend in ("torch", "torch-bf16"):
        precision = "bf16" if backend == "torch-bf16" else "fp32"
        return load_encoder(spec, backend="torch", precision=precision)
    return load_encoder(spec, backend=backend)  # type: ignore[arg-type]


def measure(spec: str, backend: str, passages: list[str], queries: list[str]) -> dict[str, Any]:
    encoder = open_encoder(spec, backend)
    encoder.encode(passages[:64], batch_size=32)  # two batches: an ONNX pool is made now
    t0 = time.perf_counter()
    encoder.encode(passages, batch_size=32)
    docs_per_s = len(passages) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for q in queries:
        encoder.encode([q], batch_size=1)
    return {
        "docs_per_s": docs_per_s,
        "query_ms": 1000 * (time.perf_counter() - t0) / len(queries),
        "backend": encoder.backend,
        "docs_per_s_source": "sample",  # measured just now, not the evaluation's cache
    }


def measure_bm25(passages: list[str], queries: list[str]) -> dict[str, Any]:
    """BM25 indexing docs/s and single-query search ms on the same texts as `measure`."""
    t0 = time.perf_counter()
    index = BM25Index.build(passages)
    docs_per_s = len(passages) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for q in queries:
        index.search(q, 10)
    query_ms = 1000 * (time.perf_counter() - t0) / len(queries)
    return {"docs_per_s": docs_per_s, "query_ms": query_ms, "docs_per_s_source": "sample"}


def hybrid_weight(spec: str, given: str) -> float:
    """The dense weight of a ``--hybrid`` row: given, else the one the model's distill
    report chose on validation (train) queries, else `DEFAULT_WEIGHT`."""
    if given:
        return float(given)
    folder = resolve_model(spec)
    if (folder / REPORT).is_file():
        report = read_report(folder)
        if isinstance(report, StaticReport):
            return report.hybrid.weight
    return DEFAULT_WEIGHT


def _combined(dense: dict[str, Any], bm25: dict[str, Any]) -> dict[str, Any]:
    """Speed of dense + BM25: both index every document and search every query."""
    return {
        "docs_per_s": 1 / (1 / dense["docs_per_s"] + 1 / bm25["docs_per_s"]),
        "query_ms": dense["query_ms"] + bm25["query_ms"],
        "docs_per_s_source": "sample",
    }


def _sample_texts(data: Path) -> list[str]:
    """Corpus documents and *train* queries (never test queries), shuffled."""
    has_train = (data / "qrels" / "train.tsv").is_file()
    corpus, queries, _ = load_beir(data, "train" if has_train else "test")
    if not has_train:
        queries = {}  # test queries are for evaluation only
    _, docs = corpus_texts(corpus)
    rng = random.Random(1)
    texts = list(queries.values()) + rng.sample(docs, min(2000, len(docs)))
    rng.shuffle(texts)
    return texts


def reduced_variant(label: str, spec: str, backend: str, dim: int, data: Path, out: Path) -> str:
    """Write a PCA-reduced copy of `spec` under `out` (a cache folder, not the report's);
    return its ``LABEL=PATH@backend``."""
    from distill.compress.dims import reduce_dims

    texts = _sample_texts(data)
    folder = out / f"{label}-d{dim}"
    report = reduce_dims(resolve_model(spec), folder, dim, texts, overwrite=True)
    print(f"{label}-d{dim}: energy kept {report['energy_kept']:.4f}", flush=True)
    return _compressed(f"{label}-d{dim}", folder, backend, texts)


def int8_variant(label: str, spec: str, data: Path, out: Path) -> str:
    """An ONNX int8 copy of `spec` under `out`, exported and quantized as a distilled
    student is (e.g. the shipped baseline, to compare compression alone); returns its
    ``LABEL+int8=PATH@backend``."""
    folder = out / f"{label}-int8"
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(resolve_model(spec), folder, ignore=shutil.ignore_patterns("onnx", ".git"))
    return _compressed(f"{label}+int8", folder, "onnx-int8", _sample_texts(data))


def _compressed(name: str, folder: Path, backend: str, texts: list[str]) -> str:
    """Export `folder` to ONNX (and int8 behind the cosine gate) as `backend` asks;
    returns ``NAME=PATH@backend``, fp32 ONNX when int8 was refused."""
    from distill.compress.export import export_onnx
    from distill.compress.quantize import QualityGate, quantize_int8

    if backend in ("onnx", "onnx-int8"):
        export_onnx(folder, texts[:64])
    if backend == "onnx-int8":
        q = quantize_int8(folder, texts[:64], QualityGate())
        if not q["written"]:
            print(f"{name}: no int8 model ({q['reason']}); fp32 ONNX instead", flush=True)
            backend = "onnx"
    return f"{name}={folder}@{backend}"


def plot(rows: list[dict[str, Any]], path: Path, dataset: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    from matplotlib.transforms import Bbox

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    # Rows far below the best (an untrained layer subset) would squash the others into
    # one line: they sit on the bottom edge as a down-pointing marker, value in the label.
    best = max(r["ndcg@10"] for r in rows)
    near = [r["ndcg@10"] for r in rows if r["ndcg@10"] >= best - _Y_SPAN]
    floor = min(near) - 0.004
    shown = {r["label"]: max(r["ndcg@10"], floor) for r in rows}
    names = {
        r["label"]: r["label"] if r["ndcg@10"] >= floor else f"{r['label']} ({r['ndcg@10']:.3f})"
        for r in rows
    }
    for r in rows:
        marker = "o" if r["ndcg@10"] >= floor else "v"
        ax.scatter(r["docs_per_s"], shown[r["label"]], s=40, marker=marker)
    ax.set_ylim(floor - 0.002, best + 0.004)
    front: list[dict[str, Any]] = []
    for r in sorted(rows, key=lambda r: -r["docs_per_s"]):
        if not front or r["ndcg@10"] > front[-1]["ndcg@10"]:
            front.append(r)
    ax.plot(
        [r["docs_per_s"] for r in front],
        [shown[r["label"]] for r in front],
        "--",
        lw=1,
        label="Pareto front",
    )
    ax.set_xscale("log")
    speeds = [r["docs_per_s"] for r in rows]
    ax.set_xlim(min(speeds) / 1.2, max(speeds) * 1.8)  # room for the labels on the right
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("corpus encoding, docs/s (log, 2 CPU cores)")
    ax.set_ylabel(f"nDCG@10 ({dataset})")
    ax.legend(loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.canvas.draw()  # the layout is final: label boxes measured now stay true
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    points = {
        r["label"]: ax.transData.transform((r["docs_per_s"], shown[r["label"]])) for r in rows
    }
    markers = {
        label: Bbox.from_extents(x - 5, y - 5, x + 5, y + 5) for label, (x, y) in points.items()
    }
    placed: list[Any] = []
    # Each label takes the first spot around its point that covers no other label or marker.
    spots = [(5, 4), (5, -11), (-5, 4), (-5, -11), (5, 12), (5, -19)]
    for r in sorted(rows, key=lambda r: r["docs_per_s"]):
        others = placed + [box for label, box in markers.items() if label != r["label"]]
        for dx, dy in spots:
            note = ax.annotate(
                names[r["label"]],
                (r["docs_per_s"], shown[r["label"]]),
                textcoords="offset points",
                xytext=(dx, dy),
                ha="left" if dx > 0 else "right",
                fontsize=8,
            )
            box = note.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in others) or (dx, dy) == spots[-1]:
                placed.append(box)
                break
            note.remove()
    fig.savefig(path, dpi=fig.dpi)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        help="LABEL=NAME_OR_PATH[@backend]; the first is the reference",
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--split", default="test")
    parser.add_argument("--speed-docs", type=int, default=256)
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    parser.add_argument("--dims", type=int, default=None, help="add a PCA-reduced row")
    parser.add_argument("--dims-of", default=None, help="LABEL to reduce (default: last)")
    parser.add_argument("--bm25", action="store_true", help="add a BM25-alone row")
    parser.add_argument(
        "--hybrid",
        action="append",
        default=[],
        help="LABEL[=WEIGHT]: add that model fused with BM25 (weight: its distill report's)",
    )
    parser.add_argument(
        "--int8-of",
        action="append",
        default=[],
        help="LABEL of a model to add as an ONNX int8 copy too (e.g. the shipped baseline)",
    )
    parser.add_argument(
        "--teacher-form",
        action="append",
        default=[],
        help="LABEL of a row that is the teacher in another form (int8, bf16): ratios are "
        "also given against the fastest of them",
    )
    args = parser.parse_args()
    prov = Provenance()
    specs = dict(m.partition("=")[::2] for m in args.model)
    for label in args.int8_of:
        if label not in specs:
            parser.error(f"--int8-of {label!r}: no --model with that label")
        spec = specs[label].partition("@")[0]
        args.model.append(int8_variant(label, spec, args.data, cache_dir() / "bench-table"))
    if args.dims:
        label = args.dims_of or args.model[-1].partition("=")[0]
        if label not in specs:
            parser.error(f"--dims-of {label!r}: no --model with that label")
        spec, _, backend = specs[label].partition("@")
        args.model.append(
            reduced_variant(
                label, spec, backend or "torch", args.dims, args.data, cache_dir() / "bench-table"
            )
        )

    corpus, queries, qrels = load_beir(args.data, args.split)
    _, texts = corpus_texts(corpus)
    passages = random.Random(0).sample(texts, min(args.speed_docs, len(texts)))
    speed_queries = list(queries.values())[:32]
    hybrids = dict(h.partition("=")[::2] for h in args.hybrid)
    for label in hybrids:
        if label not in specs:
            parser.error(f"--hybrid {label!r}: no --model with that label")
    bm25_speed = measure_bm25(passages, speed_queries) if args.bm25 or hybrids else {}
    rows: list[dict[str, Any]] = []

    def add(report: dict[str, Any]) -> None:
        rows.append(report)
        print(
            f"{report['label']}: nDCG@10 {report['ndcg@10']:.4f} docs/s {report['docs_per_s']:.1f}",
            flush=True,
        )

    for item in args.model:
        label, _, spec = item.partition("=")
        spec, _, backend = spec.partition("@")
        backend = backend or "torch"
        encoder = open_encoder(spec, backend)
        cache = cache_for(encoder, embeddings_dir())  # int8 and bf16 vectors apart
        report = evaluate(encoder, corpus, queries, qrels, cache=cache)
        speed = measure(spec, backend, passages, speed_queries)
        report.update(speed)
        report.update(label=label, size_mb=size_mb(resolve_model(spec), backend))
        add(report)
        if label in hybrids:
            weight = hybrid_weight(spec, hybrids[label])
            fused = evaluate_hybrid(encoder, corpus, queries, qrels, cache=cache, weight=weight)
            fused.update(_combined(speed, bm25_speed), backend=f"{backend}+bm25")
            fused.update(label=f"{label}+bm25 (w={weight:g})", size_mb=report["size_mb"])
            add(fused)
    if args.bm25:
        bm25 = evaluate(None, corpus, queries, qrels)
        bm25.update(bm25_speed, label="bm25", size_mb=0.0)
        add(bm25)
    table = render(rows, args.teacher_form)
    record = prov.finish()
    args.out.mkdir(parents=True, exist_ok=True)
    header = (
        f"{args.data.name} {args.split}; `{record['command']}`; commit {record['commit']}, "
        f"{record['date']}; machine {'idle' if record['idle'] else 'NOT idle'} "
        f"(others' CPU share {record['others_cpu_share']})"
    )
    (args.out / "table.md").write_text(header + "\n\n" + table + "\n")
    for r in rows:
        r.pop("per_query_ndcg@10")
    payload = {"provenance": record, "rows": rows}
    (args.out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    plot(rows, args.out / "pareto.png", f"{args.data.name} {args.split}")
    print(header)
    print(table)
    print(f"wrote {args.out}/table.md, results.json, pareto.png")


def render(rows: list[dict[str, Any]], teacher_forms: list[str]) -> str:
    """The table: every ratio against the first row (the fp32 teacher) and against the
    fastest of the teacher's forms (`--teacher-form` rows and the first); each row's
    paired test against the first."""
    ref = rows[0]
    forms = [r for r in rows if r is ref or r["label"] in teacher_forms]
    fastest = max(forms, key=lambda r: r["docs_per_s"])
    lines = [
        f"| model | nDCG@10 | % of {ref['label']} | Recall@100 | docs/s | x {ref['label']} "
        f"| x fastest teacher ({fastest['label']}) | query ms | size MB "
        f"| ΔnDCG@10 vs {ref['label']} [95% CI] | p |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for r in rows:
        test = paired_test(r["per_query_ndcg@10"], ref["per_query_ndcg@10"])
        r["vs_reference"] = test.__dict__
        r["x_reference"] = r["docs_per_s"] / ref["docs_per_s"]
        r["x_fastest_teacher"] = r["docs_per_s"] / fastest["docs_per_s"]
        cells = [
            r["label"],
            f"{r['ndcg@10']:.4f}",
            f"{100 * r['ndcg@10'] / ref['ndcg@10']:.1f} %",
            f"{r['recall@100']:.4f}",
            f"{r['docs_per_s']:.1f}",
            f"{r['x_reference']:.1f}",
            f"{r['x_fastest_teacher']:.1f}",
            f"{r['query_ms']:.1f}",
            f"{r['size_mb']:.0f}",
            f"{test.mean_diff:+.4f} [{test.ci_low:+.4f}, {test.ci_high:+.4f}]",
            f"{test.p_value:.3f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
