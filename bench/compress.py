"""Compression of one encoder — ONNX, int8, fewer dimensions — measured in one run.

    python bench/compress.py [--model all-MiniLM-L6-v2|PATH] [--dims 256,128]
        [--queries 50] [--corpus 300] [--speed-docs 256] [--out bench/out/compress]
    python bench/compress.py --model all-mpnet-base-v2 --int8-only --check-texts 32
        [--out bench/out/compress-int8]

The model folder is copied into the cache first (nothing is written beside installed
models). Check texts (export/quantize cosine, PCA fit) are SciFact documents outside
the evaluation slice and SciFact *train* queries; quality is nDCG@10 of exact search
on a slice of SciFact *test* (the first `--queries` judged queries, their relevant
documents plus others up to `--corpus` documents), used for evaluation only. Speed:
docs/s over the first `--speed-docs` corpus documents (batch 32) and the median
milliseconds of one query at a time, on the same texts for every variant.

Writes ``results.json`` (the rows, the PCA rows and every export, int8 and PCA
report, with the run's provenance: command, commit, date, machine and whether it was
idle) and ``table.md`` into ``--out``; ``--int8-only`` writes the export and int8
reports.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from provenance import Provenance, write

from distill.compress.dims import reduce_dims
from distill.compress.export import export_onnx, files_mb, onnx_files
from distill.compress.quantize import QualityGate, quantize_int8, retrieval_metric
from search.assets import cache_dir, resolve_model
from search.corpus import load_beir
from search.encoder import Encoder, TorchEncoder
from search.evaluate import corpus_texts
from search.onnx_encoder import FP32_FILE, INT8_FILE, OnnxEncoder
from search.types import Corpus, Qrels, Queries

DEFAULT_DATA = Path(os.environ.get("DISTILSEARCH_DATA", "../shared/data/beir")) / "scifact"
OUT = Path(__file__).resolve().parent / "out"


def eval_slice(
    corpus: Corpus, queries: Queries, qrels: Qrels, n_queries: int, n_docs: int
) -> tuple[Corpus, Queries, Qrels]:
    """The first `n_queries` judged queries, their relevant docs, then others to `n_docs`."""
    qids = [q for q in qrels if q in queries][:n_queries]
    keep = {d for q in qids for d in qrels[q]}
    for doc_id in corpus:
        if len(keep) >= n_docs:
            break
        keep.add(doc_id)
    sliced = {d: corpus[d] for d in corpus if d in keep}
    return sliced, {q: queries[q] for q in qids}, {q: qrels[q] for q in qids}


def check_texts(
    folder: Path, corpus: Corpus, exclude: set[str], n_docs: int, n_queries: int
) -> list[str]:
    """Documents outside the evaluation slice, then SciFact train queries."""
    _, texts = corpus_texts({d: corpus[d] for d in corpus if d not in exclude})
    train = []
    if (folder / "qrels" / "train.tsv").is_file():
        _, train_queries, _ = load_beir(folder, split="train")
        train = list(train_queries.values())[:n_queries]
    return texts[-n_docs:] + train


def speed(encoder: Encoder, docs: list[str], queries: list[str]) -> tuple[float, float, np.ndarray]:
    """(docs/s at batch 32, median ms of one query, document vectors)."""
    encoder.encode(docs[:32], batch_size=32)
    t0 = time.perf_counter()
    vecs = encoder.encode(docs, batch_size=32)
    docs_per_s = len(docs) / (time.perf_counter() - t0)
    times = []
    for query in queries:
        t0 = time.perf_counter()
        encoder.encode([query], batch_size=1)
        times.append(1000 * (time.perf_counter() - t0))
    return docs_per_s, statistics.median(times), vecs


class Memo:
    """Evaluations keyed by (folder, backend), so the gate's runs are not repeated."""

    def __init__(self, score: Callable[[Encoder], float]) -> None:
        self.score, self.seen = score, {}  # type: ignore[var-annotated]

    def __call__(self, encoder: Encoder) -> float:
        key = (str(getattr(encoder, "folder", encoder.name)), encoder.backend)
        if key not in self.seen:
            self.seen[key] = self.score(encoder)
        return float(self.seen[key])


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Rows of equal keys as a Markdown table, the keys as its header."""
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(row[h]) for h in header) + " |" for row in rows]
    return "\n".join(lines)


def heading(what: str, record: dict[str, Any]) -> str:
    """The first line of ``table.md``: what was measured and its provenance."""
    return (
        f"{what}; `{record['command']}`; commit {record['commit']}, {record['date']}; "
        f"machine {'idle' if record['idle'] else 'NOT idle'} "
        f"(others' CPU share {record['others_cpu_share']})"
    )


def fresh_copy(model: str, work: Path) -> Path:
    src = resolve_model(model)
    dest = work / (src.name if Path(model).exists() else model)
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("onnx", ".*"))
    return dest


def torch_mb(folder: Path) -> float:
    return files_mb([p for p in folder.rglob("*") if p.suffix in {".safetensors", ".bin"}])


def int8_only(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Export and quantize `args.model` on check texts; print and return both reports."""
    folder = fresh_copy(args.model, work)
    corpus, _, _ = load_beir(args.data)
    texts = check_texts(args.data, corpus, set(), args.check_texts, 0)
    texts = [t[: args.max_chars] for t in texts]
    reports = {"export": export_onnx(folder, texts)}
    print(json.dumps({"export": reports["export"]}, indent=1), flush=True)
    reports["int8"] = quantize_int8(folder, texts)
    print(json.dumps({"int8": reports["int8"]}, indent=1), flush=True)
    return reports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="all-MiniLM-L6-v2")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--dims", default="256,128")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--corpus", type=int, default=300)
    parser.add_argument("--speed-docs", type=int, default=256)
    parser.add_argument("--check-texts", type=int, default=64)
    parser.add_argument("--pca-texts", type=int, default=300)
    parser.add_argument("--center-too", action="store_true", help="also a centred PCA row")
    parser.add_argument("--int8-only", action="store_true", help="export + int8 search only")
    parser.add_argument("--max-chars", type=int, default=600, help="--int8-only text cut")
    parser.add_argument("--work", type=Path, default=cache_dir() / "bench-compress")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results folder (default bench/out/compress, or bench/out/compress-int8)",
    )
    args = parser.parse_args()
    prov = Provenance()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args.work.mkdir(parents=True, exist_ok=True)
    results_dir = args.out or OUT / ("compress-int8" if args.int8_only else "compress")
    if args.int8_only:
        reports = int8_only(args, args.work)
        record = prov.finish()
        write(results_dir, "results.json", {"provenance": record, "model": args.model, **reports})
        int8 = {k: v for k, v in reports["int8"].items() if not isinstance(v, (dict, list))}
        table = markdown_table([int8]) if int8 else ""
        (results_dir / "table.md").write_text(
            heading(f"{args.model}, export + int8", record) + "\n\n" + table + "\n"
        )
        print(f"wrote {results_dir}/results.json, table.md")
        return

    corpus, queries, qrels = load_beir(args.data)
    s_corpus, s_queries, s_qrels = eval_slice(corpus, queries, qrels, args.queries, args.corpus)
    docs = corpus_texts(dict(list(corpus.items())[: args.speed_docs]))[1]
    one_queries = list(s_queries.values())[:20]
    check = check_texts(args.data, corpus, set(s_corpus), args.check_texts, 16)
    pca_texts = check_texts(args.data, corpus, set(s_corpus), args.pca_texts, 100)
    memo = Memo(retrieval_metric(s_corpus, s_queries, s_qrels))
    gate = QualityGate(evaluate=memo)
    folder = fresh_copy(args.model, args.work)

    reports: dict[str, Any] = {"export": export_onnx(folder, check)}
    reports["int8"] = quantize_int8(folder, check, gate)
    variants: list[tuple[str, Encoder, float]] = [
        ("torch", TorchEncoder(folder), torch_mb(folder)),
        ("onnx", OnnxEncoder(folder), files_mb(onnx_files(folder, FP32_FILE))),
    ]
    if reports["int8"]["written"]:
        int8 = OnnxEncoder(folder, quantized=True)
        variants.append(("onnx-int8", int8, files_mb(onnx_files(folder, INT8_FILE))))
    dims = [int(d) for d in args.dims.split(",") if d]
    pca_rows = []
    for dim, center in [(d, False) for d in dims] + ([(dims[0], True)] if args.center_too else []):
        tag = f"d{dim}" + ("-centred" if center else "")
        out = args.work / f"{folder.name}-{tag}"
        rep = reduce_dims(folder, out, dim, pca_texts, center=center, evaluate=memo, overwrite=True)
        reports[tag] = rep
        pca_rows.append(
            {
                "variant": tag,
                "energy_kept": rep["energy_kept"],
                "pairwise_cosine_corr": rep.get("pairwise_cosine_corr"),
                "neighbour_overlap@10": rep.get("neighbour_overlap@10"),
                "ndcg@10 (torch)": rep["reduced_score"],
                "relative_drop": rep["relative_drop"],
            }
        )
        if center:
            continue  # the centring question is answered by nDCG; no artifacts needed
        reports[f"{tag}-export"] = export_onnx(out, check)
        reports[f"{tag}-int8"] = quantize_int8(out, check, gate)
        if reports[f"{tag}-int8"]["written"]:
            enc = OnnxEncoder(out, quantized=True)
            variants.append((f"{tag} onnx-int8", enc, files_mb(onnx_files(out, INT8_FILE))))
        else:
            variants.append((f"{tag} onnx", OnnxEncoder(out), files_mb(onnx_files(out, FP32_FILE))))

    rows, torch_vecs = [], None
    for name, encoder, size in variants:
        docs_per_s, query_ms, vecs = speed(encoder, docs, one_queries)
        torch_vecs = vecs if torch_vecs is None else torch_vecs
        same_space = vecs.shape[1] == torch_vecs.shape[1]
        cos = float(np.sum(vecs * torch_vecs, axis=1).mean()) if same_space else float("nan")
        rows.append(
            {
                "variant": name,
                "dim": encoder.dim,
                "cosine_to_torch": round(cos, 4),
                "ndcg@10": round(memo(encoder), 4),
                "docs_per_s": round(docs_per_s, 1),
                "query_ms": round(query_ms, 2),
                "size_mb": round(size, 1),
            }
        )
    setting = f"{args.model} on SciFact test slice: {len(s_queries)} queries, {len(s_corpus)} docs"
    speed_setting = f"speed over {len(docs)} docs, {os.cpu_count()} cores"
    print(f"\n{setting};\n{speed_setting}\n")
    tables = [markdown_table(rows)]
    print(tables[0])
    if pca_rows:
        pca_title = "PCA reductions (similarity kept on held-out check texts, nDCG with torch):"
        print(f"\n{pca_title}\n")
        tables += [pca_title, markdown_table(pca_rows)]
        print(tables[-1])
    record = prov.finish()
    result = {"provenance": record, "model": args.model, "rows": rows, "pca": pca_rows}
    write(results_dir, "results.json", {**result, "reports": reports})
    top = heading(f"{setting}; {speed_setting}", record)
    (results_dir / "table.md").write_text("\n\n".join([top, *tables]) + "\n")
    print(f"wrote {results_dir}/results.json, table.md")


if __name__ == "__main__":
    main()
