"""Index choice, memory estimates, search parameters and recall tuning, against exact search."""

import json
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest

from indexer.factory import (
    build_memory,
    can_remove,
    choose_factory,
    estimate_memory,
    ivf_lists,
    make_index,
    parse_memory,
)
from indexer.quality import (
    exact_neighbours,
    lower_bound,
    measure,
    probe_queries,
    recall_at_k,
    tune,
)
from indexer.shards import WorkDir, write_shard
from search.index_folder import index_class, make_search_params


def clustered(n: int, d: int, seed: int = 0, clusters: int = 50, noise: float = 1.0) -> np.ndarray:
    """Normalised vectors around random centres (like real embeddings, not uniform)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + noise * rng.standard_normal((n, d))
    x = x.astype(np.float32)
    faiss.normalize_L2(x)
    return x


def test_parse_memory() -> None:
    assert parse_memory("4GB") == 4 * 10**9
    assert parse_memory("512MiB") == 512 * 2**20
    assert parse_memory("1.5g") == 1_500_000_000
    assert parse_memory(1234) == 1234
    with pytest.raises(ValueError, match=r"not a memory size; write e\.g\. 4GB"):
        parse_memory("lots")


def test_auto_choice_grows_with_the_corpus_and_shrinks_with_memory() -> None:
    gb = 10**9
    assert choose_factory(40_000, 384, 4 * gb) == "Flat"
    assert choose_factory(300_000, 384, 4 * gb) == "IVF1024,Flat"
    assert choose_factory(1_000_000, 384, 4 * gb) == "IVF2048,Flat"
    assert choose_factory(1_000_000, 384, 2 * gb) == "IVF2048,PQ192x4fs,Refine(SQfp16)"
    assert choose_factory(1_000_000, 384, 12 * gb // 10) == "IVF2048,SQ8"
    assert choose_factory(1_000_000, 384, 6 * gb // 10) == "IVF2048,PQ96x4fs"
    assert choose_factory(60_000, 102, 275 * 10**6) == "IVF512,SQ8"  # dims not a multiple of 4
    with pytest.raises(ValueError, match="raise --max-memory or pass --factory"):
        choose_factory(100_000_000, 384, gb)
    assert ivf_lists(1_000_000) == 2048 and ivf_lists(1000) == 16


# A child process builds one index from checkpoint shards, as `build_index` does, and
# reports its peak resident memory (Linux /proc).
_MEASURE_BUILD = """
import json, sys
from pathlib import Path
from indexer.build import assemble
from indexer.shards import WorkDir

def kib(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024

work, factory, n, d, job = sys.argv[1:]
with WorkDir(Path(work), json.loads(job)) as wd:
    assemble(wd, int(n), int(d), factory)
print(json.dumps({"peak": kib("VmHWM:")}))
"""


def test_build_memory_covers_measured_builds(tmp_path: Path) -> None:
    """`build_memory` against real builds, measured here: each vector's share (the
    growth of peak RSS from n to 2n vectors, same lists and training sample) stays
    under the estimate's, and so does the whole peak."""
    d, nlist, sizes = 64, 256, (100_000, 200_000)
    x = clustered(sizes[-1], d)
    peaks: dict[tuple[str, int], int] = {}
    for n in sizes:
        job = {"test": "build-memory", "n": n, "dim": d, "shard_size": 25_000}
        with WorkDir(tmp_path / str(n), job) as wd:
            for number, start in enumerate(range(0, n, 25_000)):
                ids = np.arange(start, start + 25_000, dtype=np.int64)
                write_shard(wd.shard_dir, number, ids, x[start : start + 25_000])
        for factory in (
            f"IVF{nlist},Flat",
            f"IVF{nlist},SQ8",
            f"IVF{nlist},PQ32x4fs,Refine(SQfp16)",
        ):
            args = [tmp_path / str(n), factory, n, d, json.dumps(job)]
            done = subprocess.run(
                [sys.executable, "-c", _MEASURE_BUILD, *map(str, args)],
                capture_output=True,
                text=True,
                timeout=600,
                cwd=Path(__file__).resolve().parents[1],
            )
            assert done.returncode == 0, done.stderr[-2000:]
            rss = json.loads(done.stdout.strip().splitlines()[-1])
            peaks[factory, n] = rss["peak"]
            budget = build_memory(factory, n, d)
            assert budget is not None and rss["peak"] <= budget, (factory, n, rss, budget)
    small, large = sizes
    for factory in {f for f, _ in peaks}:
        measured = peaks[factory, large] - peaks[factory, small]
        estimated = int(build_memory(factory, large, d) or 0) - int(
            build_memory(factory, small, d) or 0
        )
        # Measured once: 0.55 (SQ8) to 0.90 (PQ + refine) of the estimate.
        assert 0.4 * estimated <= measured <= estimated, (factory, measured, estimated)


@pytest.mark.parametrize(
    "factory", ["Flat", "HNSW16", "IVF64,Flat", "IVF64,SQ8", "IVF64,PQ16x4fs,Refine(SQfp16)"]
)
def test_memory_estimate_matches_the_real_index(factory: str) -> None:
    n, d = 10_000, 64
    x = clustered(n, d)
    index = make_index(factory, d)
    index.train(x)
    index.add_with_ids(x, np.arange(n, dtype=np.int64))
    actual = faiss.serialize_index(index).nbytes
    estimate = estimate_memory(factory, n, d)
    assert estimate is not None
    # The file lacks the IDMap2 reverse map (rebuilt on load), hence the slack upward.
    assert 0.8 * actual <= estimate <= 1.6 * actual, (factory, estimate, actual)


def test_make_index_takes_our_ids_and_knows_what_can_delete() -> None:
    assert index_class(make_index("Flat", 8)) == "IndexIDMap2>IndexFlat"
    assert index_class(make_index("IVF4,Flat", 8)) == "IndexIVFFlat"
    assert index_class(make_index("HNSW8", 8)) == "IndexIDMap2>IndexHNSWFlat"
    assert can_remove(make_index("Flat", 8)) and can_remove(make_index("IVF4,Flat", 8))
    assert not can_remove(make_index("HNSW8", 8))
    assert not can_remove(make_index("IVF4,PQ4x4fs,RFlat", 8))
    with pytest.raises(ValueError, match="FAISS cannot build factory string 'Nope'"):
        make_index("Nope", 8)


def test_exact_neighbours_over_batches_equal_one_flat_search() -> None:
    x = clustered(3000, 32)
    ids = np.arange(3000, dtype=np.int64) * 7 + 5  # ids that are not positions
    q = x[:20]
    scores, got = exact_neighbours(
        q, [(x[i : i + 700], ids[i : i + 700]) for i in range(0, 3000, 700)], 10
    )
    flat = faiss.IndexFlatIP(32)
    flat.add(x)
    want_scores, pos = flat.search(q, 10)
    assert np.array_equal(got, ids[pos]) and np.allclose(scores, want_scores, atol=1e-6)
    assert recall_at_k(got[:, :5], got[:, :5]) == 1.0
    assert recall_at_k(got[:, 5:], got[:, :5]) == 0.0


def test_probe_queries_sit_as_far_from_their_vector_as_its_nearest_neighbour() -> None:
    x = clustered(500, 32)
    nearest = np.linspace(0.2, 0.99, 500).astype(np.float32)
    probes = probe_queries(x, nearest, seed=0)
    assert np.allclose(np.linalg.norm(probes, axis=1), 1.0, atol=1e-5)
    assert np.allclose((probes * x).sum(axis=1), nearest, atol=1e-4)
    assert not np.allclose(probes, probe_queries(x, nearest, seed=1))


def test_tuning_reaches_the_target_recall_and_nprobe_matters() -> None:
    both = clustered(20_300, 32)
    x, queries = both[:20_000], both[20_000:]  # held-out queries: same centres, new points
    ids = np.arange(len(x), dtype=np.int64)
    index = make_index("IVF256,Flat", 32)
    index.train(x)
    index.add_with_ids(x, ids)
    truth = exact_neighbours(queries, [(x, ids)], 10)[1]
    low = measure(index, queries, truth, {"nprobe": 1}).mean()
    params, per_query, tried = tune(index, queries, truth, 0.95)
    recall = per_query.mean()
    assert low < 0.9 and lower_bound(per_query) >= 0.95 and recall > 0.95
    assert params["nprobe"] > 1 and tried[-1]["nprobe"] == params["nprobe"]
    assert all(t["recall_low"] < 0.95 for t in tried[:-1])  # the cheapest that reaches it
    assert tried[-1]["recall_low"] == pytest.approx(lower_bound(per_query), abs=1e-4)
    # Independent check of the chosen setting, via the plain FAISS attribute.
    faiss.extract_index_ivf(index).nprobe = int(params["nprobe"])
    _, found = index.search(queries, 10)
    assert recall_at_k(found, truth) == pytest.approx(recall)


def test_search_params_are_checked_against_the_index() -> None:
    hnsw = make_index("HNSW8", 8)
    sp, filtered, _ = make_search_params(hnsw, {"efSearch": 77})
    assert isinstance(sp, faiss.SearchParametersHNSW) and sp.efSearch == 77 and not filtered
    with pytest.raises(ValueError, match=r"does not take 'nprobe'; it takes efSearch"):
        make_search_params(hnsw, {"nprobe": 4})
    with pytest.raises(ValueError, match="unknown search parameter 'ef'"):
        make_search_params(hnsw, {"ef": 4})
    refine = make_index("IVF4,PQ4x4fs,RFlat", 8)
    sp, _, keep = make_search_params(refine, {"nprobe": 3, "k_factor": 5})
    assert isinstance(sp, faiss.IndexRefineSearchParameters) and sp.k_factor == 5
    assert [p.nprobe for p in keep if isinstance(p, faiss.SearchParametersIVF)] == [3]


def test_lower_bound_of_the_mean_recall() -> None:
    per_query = np.array([1.0, 0.8, 0.9, 1.0])
    std = np.sqrt(((per_query - 0.925) ** 2).sum() / 3)
    assert lower_bound(per_query) == pytest.approx(0.925 - 1.96 * std / 2)
    assert lower_bound(np.array([0.7])) == 0.7 and lower_bound(np.array([])) == 1.0
