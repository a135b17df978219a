"""Measuring an approximate index against exact search, and tuning its search parameters."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import faiss
import numpy as np

from search.index_folder import index_chain, index_kind, make_search_params

logger = logging.getLogger(__name__)

NPROBES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
EF_SEARCHES = (16, 32, 64, 128, 256, 512, 1024)
K_FACTORS = (2, 4, 8, 16)
_BLOCK = 32_768  # vectors scored at a time by the exact search


def exact_neighbours(
    queries: np.ndarray, batches: Iterable[tuple[np.ndarray, np.ndarray]], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-`k` by inner product, over vectors streamed in batches.

    Plain NumPy products, block by block: memory stays bounded, and the result does
    not depend on FAISS (the thing it checks).

    Args:
        queries: float32 (nq, d).
        batches: ``(vectors (m, d) float32, ids (m,) int64)`` pairs, e.g. index shards.
        k: Neighbours per query.

    Returns:
        ``(scores, ids)``: float32 and int64 (nq, k), best first (-1 ids where fewer
        than `k` vectors exist).
    """
    nq = len(queries)
    best_scores = np.full((nq, k), -np.inf, dtype=np.float32)
    best_ids = np.full((nq, k), -1, dtype=np.int64)
    for vecs, ids in batches:
        for start in range(0, len(ids), _BLOCK):
            block = np.asarray(vecs[start : start + _BLOCK], dtype=np.float32)
            block_ids = np.broadcast_to(ids[start : start + len(block)], (nq, len(block)))
            scores = np.hstack([best_scores, queries @ block.T])
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            best_scores = np.take_along_axis(scores, top, axis=1)
            best_ids = np.take_along_axis(np.hstack([best_ids, block_ids]), top, axis=1)
    order = np.argsort(-best_scores, axis=1, kind="stable")
    return np.take_along_axis(best_scores, order, axis=1), np.take_along_axis(
        best_ids, order, axis=1
    )


def probe_queries(vectors: np.ndarray, nearest: np.ndarray, seed: int) -> np.ndarray:
    """Queries near indexed vectors but not on them, like queries the index never saw.

    Each vector is turned in a random direction by the angle to its nearest other
    vector, so its query lies as far from it as that neighbour does. Vectors used as
    queries themselves flatter an index (a graph search that starts on a node finds
    its linked neighbours), so recall is measured on these instead.

    Args:
        vectors: float32 (n, d), L2-normalised.
        nearest: (n,) cosine of each vector to its nearest other indexed vector.
        seed: Seed of the directions.

    Returns:
        float32 (n, d), L2-normalised.
    """
    rng = np.random.default_rng(seed)
    away = rng.standard_normal(vectors.shape).astype(np.float32)
    away -= (away * vectors).sum(axis=1, keepdims=True) * vectors  # orthogonal to each vector
    faiss.normalize_L2(away)
    cos = np.clip(nearest, -1.0, 1.0).astype(np.float32)[:, None]
    out = np.ascontiguousarray(cos * vectors + np.sqrt(1.0 - cos**2) * away, dtype=np.float32)
    faiss.normalize_L2(out)
    return out


def per_query_recall(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per query, the fraction of its row of `truth` (exact top-k ids) present in `found`."""
    k = truth.shape[1]
    hits = [len(set(f[f >= 0]) & set(t[t >= 0])) for f, t in zip(found, truth, strict=True)]
    return np.asarray(hits, dtype=np.float64) / k


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean recall of `found` against `truth` (1.0 when there are no queries)."""
    per_query = per_query_recall(found, truth)
    return float(per_query.mean()) if len(per_query) else 1.0


def lower_bound(per_query: np.ndarray) -> float:
    """The lower end of a 95% confidence interval of the mean recall (normal approximation)."""
    if len(per_query) < 2:
        return float(per_query.mean()) if len(per_query) else 1.0
    return float(per_query.mean() - 1.96 * per_query.std(ddof=1) / np.sqrt(len(per_query)))


def measure(
    index: faiss.Index, queries: np.ndarray, truth: np.ndarray, params: dict[str, float]
) -> np.ndarray:
    """Per-query recall@k of `index` searched with `params`, k = ``truth.shape[1]``."""
    k = truth.shape[1]
    sp, _, _keep = make_search_params(index, params, k=k)
    _, found = index.search(queries, k, params=sp)
    return per_query_recall(found, truth)


def _grid(kinds: Sequence[str], nlist: int) -> list[dict[str, float]]:
    """Parameter settings to try, cheapest first."""
    if "IVF" in kinds:
        probes = [p for p in NPROBES if p <= nlist] or [nlist]
        if "Refine" in kinds:
            return [{"nprobe": p, "k_factor": f} for p in probes for f in K_FACTORS]
        return [{"nprobe": p} for p in probes]
    if "HNSW" in kinds:
        if "Refine" in kinds:
            return [{"efSearch": e, "k_factor": f} for e in EF_SEARCHES for f in K_FACTORS]
        return [{"efSearch": e} for e in EF_SEARCHES]
    if "Refine" in kinds:
        return [{"k_factor": f} for f in K_FACTORS]
    return [{}]


def tune(
    index: faiss.Index, queries: np.ndarray, truth: np.ndarray, target: float
) -> tuple[dict[str, float], np.ndarray, list[dict[str, Any]]]:
    """The cheapest search parameters whose recall reaches `target` with confidence.

    A setting qualifies when the lower end of the 95% confidence interval of its mean
    recall on the sample reaches `target`, so the recall of other queries from the same
    distribution reaches it too (sampling noise of a few hundred queries is ~0.01).

    Returns:
        ``(params, per_query, tried)``: the first qualifying setting of the grid
        (cheapest first), else the one with the best mean; its per-query recalls; and
        every setting measured, with its mean and lower bound.
    """
    chain = list(index_chain(index))
    kinds = [index_kind(i) for i in chain]
    nlist = next((int(i.nlist) for i in chain if isinstance(i, faiss.IndexIVF)), 1)
    tried: list[dict[str, Any]] = []
    best: tuple[float, dict[str, float], np.ndarray] | None = None
    for params in _grid(kinds, nlist):
        per_query = measure(index, queries, truth, params)
        mean, low = float(per_query.mean()), lower_bound(per_query)
        tried.append({**params, "recall": round(mean, 4), "recall_low": round(low, 4)})
        if best is None or mean > best[0]:
            best = (mean, params, per_query)
        if low >= target:
            return params, per_query, tried
    assert best is not None  # the grid is never empty
    logger.warning(
        "recall@%d %.3f is below the target %.2f with every setting tried; a larger "
        "index type (or --max-memory) would recall more",
        truth.shape[1],
        best[0],
        target,
    )
    return best[1], best[2], tried
