"""Per-query latency of dense, BM25 and hybrid search through the service, in one run.

    python bench/modes.py --index runs/index [--data DIR] [--n 300] [--split test]
        [--out bench/out/modes]

Sends the split's queries one at a time to the app (in process, no network), the modes
interleaved query by query so that they share the machine's state, and prints the
median and 95th percentile of the server time (``took_ms``) of each mode and the
ratio hybrid / dense. Hybrid encodes the query (like dense), searches BM25 beside it
and fuses each side's top ``hybrid_depth`` hits. Writes ``results.json`` (with the
run's provenance: command, commit, date, machine and whether it was idle) and
``table.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from provenance import Provenance, write

from api.app import create_app
from api.settings import Settings
from search.corpus import load_beir

DEFAULT_DATA = Path(os.environ.get("DISTILSEARCH_DATA", "../shared/data/beir")) / "scifact"
OUT = Path(__file__).resolve().parent / "out" / "modes"
MODES = ("dense", "bm25", "hybrid")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True, help="index folder with bm25/")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="BEIR folder (queries)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--n", type=int, default=300, help="queries per mode")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--out", type=Path, default=OUT, help="results folder")
    args = parser.parse_args()
    prov = Provenance()

    _, queries, _ = load_beir(args.data, args.split)
    texts = list(queries.values())[: args.n]
    took: dict[str, list[float]] = {m: [] for m in MODES}
    with TestClient(create_app(Settings(index_dir=args.index))) as client:
        info = client.get("/info").json()
        for text in texts[:10]:  # warm-up
            for mode in MODES:
                client.post("/search", json={"query": text, "k": args.k, "mode": mode})
        t0 = time.perf_counter()
        for text in texts:
            for mode in MODES:
                r = client.post("/search", json={"query": text, "k": args.k, "mode": mode})
                r.raise_for_status()
                took[mode].append(r.json()["took_ms"])
        wall = time.perf_counter() - t0
    setting = (
        f"{len(texts)} {args.data.name} {args.split} queries per mode, k={args.k}, one at a "
        f"time; {info['index']['size']} documents, {info['model']['name']} "
        f"({info['model']['backend']}), hybrid {info['bm25']['hybrid']}; "
        f"{os.cpu_count()} CPUs"
    )
    print(f"{setting}, {wall:.0f} s")
    got = {}
    for mode in MODES:
        ms = np.array(took[mode])
        got[mode] = {"median_ms": float(np.median(ms)), "p95_ms": float(np.percentile(ms, 95))}
        print(f"{mode:>6}: median {np.median(ms):6.2f} ms  p95 {np.percentile(ms, 95):6.2f} ms")
    ratio = got["hybrid"]["median_ms"] / got["dense"]["median_ms"]
    extra = got["hybrid"]["median_ms"] - got["dense"]["median_ms"]
    print(f"hybrid / dense, median server time: {ratio:.2f}x")

    record = prov.finish()
    results = {
        "provenance": record,
        "settings": {
            "index": str(args.index),
            "data": str(args.data),
            "split": args.split,
            "queries": len(texts),
            "k": args.k,
            "documents": info["index"]["size"],
            "model": info["model"]["name"],
            "backend": info["model"]["backend"],
            "hybrid": info["bm25"]["hybrid"],
            "cpus": os.cpu_count(),
        },
        "modes": got,
        "hybrid_over_dense_median": ratio,
        "hybrid_minus_dense_median_ms": extra,
    }
    write(args.out, "results.json", results)
    lines = [
        f"{setting}; `{record['command']}`; commit {record['commit']}, {record['date']}; "
        f"machine {'idle' if record['idle'] else 'NOT idle'} "
        f"(others' CPU share {record['others_cpu_share']})",
        "",
        "| mode | median ms | p95 ms |",
        "| --- | ---: | ---: |",
        *(f"| {m} | {got[m]['median_ms']:.2f} | {got[m]['p95_ms']:.2f} |" for m in MODES),
        "",
        f"hybrid - dense, median: {extra:+.2f} ms ({ratio:.2f}x)",
    ]
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}/results.json, table.md")


if __name__ == "__main__":
    main()
