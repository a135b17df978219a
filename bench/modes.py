"""Per-query latency of dense, BM25 and hybrid search through the service, in one run.

    python bench/modes.py --index runs/index [--data DIR] [--n 300] [--split test]

Sends the split's queries one at a time to the app (in process, no network), the modes
interleaved query by query so that they share the machine's state, and prints the
median and 95th percentile of the server time (``took_ms``) of each mode and the
ratio hybrid / dense. Hybrid encodes the query (like dense), searches BM25 beside it
and fuses each side's top ``hybrid_depth`` hits.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings
from search.corpus import load_beir

DEFAULT_DATA = Path(os.environ.get("DISTILSEARCH_DATA", "../shared/data/beir")) / "scifact"
MODES = ("dense", "bm25", "hybrid")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True, help="index folder with bm25/")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="BEIR folder (queries)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--n", type=int, default=300, help="queries per mode")
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()

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
    print(
        f"{len(texts)} {args.data.name} {args.split} queries per mode, k={args.k}, one at a "
        f"time; {info['index']['size']} documents, {info['model']['name']} "
        f"({info['model']['backend']}), hybrid {info['bm25']['hybrid']}; "
        f"{os.cpu_count()} CPUs, {wall:.0f} s"
    )
    for mode in MODES:
        ms = np.array(took[mode])
        print(f"{mode:>6}: median {np.median(ms):6.2f} ms  p95 {np.percentile(ms, 95):6.2f} ms")
    ratio = np.median(took["hybrid"]) / np.median(took["dense"])
    print(f"hybrid / dense, median server time: {ratio:.2f}x")


if __name__ == "__main__":
    main()
