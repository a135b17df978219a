"""Index types at scale: build time, peak RSS, size, query latency and recall@10.

    python bench/index_scale.py [--n 1000000] [--dim 384] [--memory 4GB] [--factories ...]
        [--work DIR] [--out bench/out/index-scale]

Writes `n` clustered synthetic vectors (normalised, see `Topics`) as
checkpoint shards, then for each candidate factory, in a fresh process each, runs
the indexer's own assembly (train on a sample, fill from the shards, tune search
parameters to recall@10 ≥ 0.95 on sampled vectors), writes the index, and in another
fresh process loads it and answers held-out queries. Recall@10 is measured against
exact search over all vectors for a few hundred queries. Peak RSS is the process's
high-water mark (``VmHWM``); query latency is one query at a time on one thread.

Prints a table; the auto choice for the memory budget is marked with ``*``. Writes
``results.json`` (every row, with the run's provenance: command, commit, date, machine
and whether it was idle) and ``table.md`` into ``--out``. ``--work`` keeps the vectors
between runs, so the candidates can be measured in several shorter runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from provenance import Provenance, write

from indexer.build import assemble, measure_quality
from indexer.factory import choose_factory, ivf_lists, parse_memory
from indexer.quality import exact_neighbours, recall_at_k
from indexer.shards import WorkDir, write_shard
from search.index_folder import make_search_params

SHARD = 50_000
K = 10
OUT = Path(__file__).resolve().parent / "out" / "index-scale"


def _job(n: int, dim: int) -> dict[str, Any]:
    return {"bench": "index_scale", "data": "topics-v1", "n": n, "dim": dim, "shard_size": SHARD}


class Topics:
    """A two-level mixture: 100 topics of 100 subtopics; points scatter around subtopics.

    Its neighbourhoods span several clusters, as sentence embeddings' do (nearest
    neighbour cosine ~0.7, 10th ~0.55 at 100k points), so IVF needs a few probes.
    """

    def __init__(self, dim: int, rng: np.random.Generator) -> None:
        top = rng.standard_normal((100, dim), dtype=np.float32)
        self.sub = top.repeat(100, axis=0) + rng.standard_normal((10_000, dim), dtype=np.float32)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        x = self.sub[rng.integers(0, len(self.sub), n)]
        x = x + rng.standard_normal(x.shape, dtype=np.float32)
        faiss.normalize_L2(x)
        return x


def make_data(work: Path, n: int, dim: int, queries: int, seed: int = 0) -> None:
    """Shards of `n` vectors, held-out queries from the same mixture, their exact top-10."""
    rng = np.random.default_rng(seed)
    topics = Topics(dim, rng)
    with WorkDir(work, _job(n, dim)) as wd:
        if len(wd.shards()) != -(-n // SHARD):
            for number, start in enumerate(range(0, n, SHARD)):
                m = min(SHARD, n - start)
                ids = np.arange(start, start + m, dtype=np.int64)
                write_shard(wd.shard_dir, number, ids, topics.sample(m, rng))
        q = topics.sample(queries, np.random.default_rng(seed + 1))
        np.save(work / "queries.npy", q)
        np.save(work / "truth.npy", exact_neighbours(q, wd.iter_shards(), K)[1])


def _rss_mib() -> float:
    """Peak resident memory of this process in MiB (``VmHWM``: unlike ``ru_maxrss``, it
    does not inherit the parent's peak across fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB, not Linux


def child_build(work: Path, factory: str, n: int, dim: int, out: Path) -> dict[str, Any]:
    """Build one index from the shards as `build_index` does; report time and memory."""
    with WorkDir(work, _job(n, dim)) as wd:
        t0 = time.perf_counter()
        index = assemble(wd, n, dim, factory)
        build_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        params, quality = measure_quality(
            index, wd, n, target=0.95, params=None, queries=300, seed=0
        )
        tune_s = time.perf_counter() - t1
    faiss.write_index(index, str(out))
    return {
        "build_s": build_s,
        "tune_s": tune_s,
        "params": params,
        "recall_sampled": quality["recall_at_10"],
        "build_rss_mib": _rss_mib(),
    }


def child_serve(work: Path, index_file: Path, params: dict[str, float]) -> dict[str, Any]:
    """Load an index and answer the held-out queries: latency and recall@10."""
    index = faiss.read_index(str(index_file))
    queries, truth = np.load(work / "queries.npy"), np.load(work / "truth.npy")
    sp, _, _keep = make_search_params(index, params, k=K)
    _, found = index.search(queries, K, params=sp)
    recall = recall_at_k(found, truth)
    faiss.omp_set_num_threads(1)
    timed = queries[:100]
    t0 = time.perf_counter()
    for q in timed:
        index.search(q[None, :], K, params=sp)
    query_ms = 1000 * (time.perf_counter() - t0) / len(timed)
    return {"recall": recall, "query_ms": query_ms, "serve_rss_mib": _rss_mib()}


def _run_child(args: list[str]) -> dict[str, Any]:
    got = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=False
    )
    if got.returncode != 0:
        return {"error": (got.stderr.strip().splitlines() or ["?"])[-1][:120]}
    result: dict[str, Any] = json.loads(got.stdout.strip().splitlines()[-1])
    return result


def candidates(n: int, dim: int, auto: str) -> list[str]:
    nlist = ivf_lists(n)
    found = [
        "Flat",
        "HNSW32",
        f"IVF{nlist},Flat",
        f"IVF{nlist},SQ8",
        f"IVF{nlist},PQ{dim // 2}x4fs,Refine(SQfp16)",
        f"IVF{nlist},PQ{dim // 2}x4fs,Refine(SQ8)",
        f"IVF{nlist},PQ{dim // 4}x4fs",
    ]
    return found if auto in found else [*found, auto]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="vectors in the corpus")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=300, help="held-out queries")
    parser.add_argument("--memory", default="4GB", help="budget of the auto choice")
    parser.add_argument("--factories", nargs="*", help="default: the candidates below")
    parser.add_argument("--work", type=Path, help="data folder (default: a temp folder)")
    parser.add_argument("--child-build", help=argparse.SUPPRESS)
    parser.add_argument("--child-serve", help=argparse.SUPPRESS)
    parser.add_argument("--index-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--params", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=OUT, help="results folder")
    args = parser.parse_args()
    if args.child_build:
        out = child_build(args.work, args.child_build, args.n, args.dim, args.index_file)
        print(json.dumps(out))
        return
    if args.child_serve:
        print(json.dumps(child_serve(args.work, args.index_file, json.loads(args.params))))
        return

    prov = Provenance()
    work = args.work or Path(tempfile.mkdtemp(prefix="index-scale-"))
    budget = parse_memory(args.memory)
    auto = choose_factory(args.n, args.dim, budget)
    t0 = time.perf_counter()
    make_data(work, args.n, args.dim, args.queries)
    print(f"{args.n} x {args.dim} clustered vectors in {work} ({time.perf_counter() - t0:.0f} s)")
    common = ["--work", str(work), "--n", str(args.n), "--dim", str(args.dim)]
    rows = []
    for factory in args.factories or candidates(args.n, args.dim, auto):
        index_file = work / "index.faiss"
        built = _run_child([*common, "--child-build", factory, "--index-file", str(index_file)])
        row: dict[str, Any] = {"factory": factory, **built}
        if "error" not in built:
            row["index_mb"] = index_file.stat().st_size / 1e6
            serve = ["--child-serve", factory, "--params", json.dumps(built["params"])]
            row.update(_run_child([*common, *serve, "--index-file", str(index_file)]))
            index_file.unlink()
        rows.append(row)
        print(json.dumps(row), flush=True)
    _print_table(rows, auto, budget, args.n)
    record = prov.finish()
    settings = {
        "n": args.n,
        "dim": args.dim,
        "queries": args.queries,
        "memory": args.memory,
        "auto": auto,
        "threads": {k: v for k, v in os.environ.items() if k.endswith("_NUM_THREADS")},
    }
    write(args.out, "results.json", {"provenance": record, "settings": settings, "rows": rows})
    heading = (
        f"{args.n} x {args.dim} vectors, auto choice for {budget / 1e9:.1f} GB in bold; "
        f"`{record['command']}`; commit {record['commit']}, {record['date']}; "
        f"machine {'idle' if record['idle'] else 'NOT idle'} "
        f"(others' CPU share {record['others_cpu_share']})"
    )
    (args.out / "table.md").write_text(heading + "\n\n" + _markdown(rows, auto) + "\n")
    print(f"wrote {args.out}/results.json, table.md")


def _markdown(rows: list[dict[str, Any]], auto: str) -> str:
    """The rows as the Markdown table of docs/indexing.md; failed builds say why."""
    lines = [
        "| factory | build s | build peak RSS MiB | serve RSS MiB | index MB | query ms "
        "| recall@10 | tuned params |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        name = f"**{r['factory']}** (auto)" if r["factory"] == auto else r["factory"]
        if "error" in r or "recall" not in r:
            lines.append(f"| {name} | failed: {r.get('error', '?')} |||||||")
            continue
        params = ", ".join(f"{k}={v:g}" for k, v in r["params"].items())
        lines.append(
            f"| {name} | {r['build_s']:.0f} | {r['build_rss_mib']:.0f} | {r['serve_rss_mib']:.0f}"
            f" | {r['index_mb']:.0f} | {r['query_ms']:.2f} | {r['recall']:.3f} | {params} |"
        )
    return "\n".join(lines)


def _print_table(rows: list[dict[str, Any]], auto: str, budget: int, n: int) -> None:
    head = (
        f"{'factory':<36} {'build s':>8} {'peak RSS MiB':>12} {'serve RSS MiB':>13} "
        f"{'index MB':>9} {'query ms':>9} {'recall@10':>9}  params"
    )
    print(f"\n{n} vectors; * = auto choice for {budget / 1e9:.1f} GB\n{head}\n{'-' * len(head)}")
    for r in rows:
        mark = "*" if r["factory"] == auto else " "
        if "error" in r or "recall" not in r:
            print(f"{mark}{r['factory']:<35} failed: {r.get('error', '?')}")
            continue
        params = ",".join(f"{k}={v:g}" for k, v in r["params"].items())
        print(
            f"{mark}{r['factory']:<35} {r['build_s']:>8.1f} {r['build_rss_mib']:>12.0f} "
            f"{r['serve_rss_mib']:>13.0f} {r['index_mb']:>9.1f} {r['query_ms']:>9.2f} "
            f"{r['recall']:>9.3f}  {params}"
        )
    chosen = next((r for r in rows if r["factory"] == auto and "recall" in r), None)
    if chosen is not None:
        fits = max(chosen["build_rss_mib"], chosen["serve_rss_mib"]) * 2**20 <= budget
        ok = fits and chosen["recall"] >= 0.95
        print(
            f"\nauto ({auto}): peak RSS {max(chosen['build_rss_mib'], chosen['serve_rss_mib']):.0f}"
            f" MiB, recall@10 {chosen['recall']:.3f}: target "
            f"{'met' if ok else 'NOT met'} (<= {budget / 1e9:.1f} GB, >= 0.95)"
        )


if __name__ == "__main__":
    main()
