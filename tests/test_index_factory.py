"""Index choice, memory estimates, search parameters and recall tuning, against exact search."""

import faiss
import numpy as np
import pytest

from indexer.factory import (
    can_remove,
    choose_factory,
    estimate_memory,
    ivf_lists,
    make_index,
    parse_memory,
)
from indexer.quality import drop_self, exact_neighbours, measure, recall_at_k, tune
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
    assert choose_factory(50_000, 384, 4 * gb) == "Flat"
    assert choose_factory(300_000, 384, 4 * gb) == "HNSW32"
    assert choose_factory(1_000_000, 384, 4 * gb) == "IVF2048,Flat"
    assert choose_factory(1_000_000, 384, 12 * gb // 10) == "IVF2048,PQ192x4fs,Refine(SQfp16)"
    assert choose_factory(1_000_000, 384, 65 * gb // 100) == "IVF2048,PQ192x4fs,Refine(SQ8)"
    assert choose_factory(1_000_000, 384, gb // 5) == "IVF2048,PQ96x4fs"
    assert choose_factory(50_000, 102, 15 * 10**6) == "IVF512,SQ8"  # dims not a multiple of 4
    with pytest.raises(ValueError, match="raise --max-memory or pass --factory"):
        choose_factory(100_000_000, 384, gb)
    assert ivf_lists(1_000_000) == 2048 and ivf_lists(1000) == 16


@pytest.mark.parametrize(
    "factory", ["Flat", "HNSW16", "IVF64,Flat", "IVF64,SQ8", "IVF64,PQ16x4fs,Refine(SQfp16)"]
)
def test_memory_estimate_matches_the_real_index(factory: str) -> None:
    n, d = 20_000, 64
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
    got = exact_neighbours(q, [(x[i : i + 700], ids[i : i + 700]) for i in range(0, 3000, 700)], 10)
    flat = faiss.IndexFlatIP(32)
    flat.add(x)
    _, pos = flat.search(q, 10)
    assert np.array_equal(got, ids[pos])
    assert np.array_equal(drop_self(got, ids[:20], 9), got[:, 1:])  # each query finds itself
    assert recall_at_k(got[:, :5], got[:, :5]) == 1.0
    assert recall_at_k(got[:, 5:], got[:, :5]) == 0.0


def test_tuning_reaches_the_target_recall_and_nprobe_matters() -> None:
    x = clustered(20_000, 32)
    ids = np.arange(len(x), dtype=np.int64)
    index = make_index("IVF256,Flat", 32)
    index.train(x)
    index.add_with_ids(x, ids)
    qrows = np.random.default_rng(1).choice(len(x), 200, replace=False)
    truth = drop_self(exact_neighbours(x[qrows], [(x, ids)], 11), qrows, 10)
    low = measure(index, x[qrows], qrows, truth, {"nprobe": 1})
    params, recall, tried = tune(index, x[qrows], qrows, truth, 0.95)
    assert low < 0.9 <= 0.95 <= recall
    assert params["nprobe"] > 1 and tried[-1]["nprobe"] == params["nprobe"]
    assert all(t["recall"] < 0.95 for t in tried[:-1])  # the cheapest setting that reaches it
    # Independent check of the chosen setting, via the plain FAISS attribute.
    faiss.extract_index_ivf(index).nprobe = int(params["nprobe"])
    _, found = index.search(x[qrows], 11)
    assert recall_at_k(drop_self(found, qrows, 10), truth) == pytest.approx(recall)


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
