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


def exact_neighbours(
    queries: np.ndarray, batches: Iterable[tuple[np.ndarray, np.ndarray]], k: int
) -> np.ndarray:
    """Exact top-`k` ids by inner product, over vectors streamed in batches.

    Args:
        queries: float32 (nq, d).
        batches: ``(vectors (m, d) float32, ids (m,) int64)`` pairs, e.g. index shards.
        k: Neighbours per query.

    Returns:
        int64 (nq, k) ids, best first (-1 where fewer than `k` vectors exist).
    """
    heap = faiss.ResultHeap(len(queries), k, keep_max=True)
    for vecs, ids in batches:
        flat = faiss.IndexFlatIP(queries.shape[1])
        flat.add(np.ascontiguousarray(vecs, dtype=np.float32))
        scores, pos = flat.search(queries, min(k, len(ids)))
        heap.add_result(scores, np.where(pos >= 0, ids[np.maximum(pos, 0)], -1))
    heap.finalize()
    return np.asarray(heap.I, dtype=np.int64)


def drop_self(found: np.ndarray, query_ids: np.ndarray, k: int) -> np.ndarray:
    """Remove each query's own id from its result row and keep `k` columns.

    Queries sampled from the indexed vectors find themselves first; recall counts
    how well the index finds their other neighbours.
    """
    out = np.full((len(found), k), -1, dtype=np.int64)
    for i, (row, own) in enumerate(zip(found, query_ids, strict=True)):
        rest = row[row != own][:k]
        out[i, : len(rest)] = rest
    return out


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each row of `truth` (exact top-k ids) present in `found`."""
    k = truth.shape[1]
    hits = [len(set(f[f >= 0]) & set(t[t >= 0])) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits) / k) if len(hits) else 1.0


def measure(
    index: faiss.Index,
    queries: np.ndarray,
    query_ids: np.ndarray,
    truth: np.ndarray,
    params: dict[str, float],
) -> float:
    """recall@k of `index` with `params`, k = ``truth.shape[1]`` (own ids dropped)."""
    k = truth.shape[1]
    sp, _, _keep = make_search_params(index, params)
    _, found = index.search(queries, k + 1, params=sp)
    return recall_at_k(drop_self(found, query_ids, k), truth)


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
    index: faiss.Index,
    queries: np.ndarray,
    query_ids: np.ndarray,
    truth: np.ndarray,
    target: float,
) -> tuple[dict[str, float], float, list[dict[str, Any]]]:
    """The cheapest search parameters reaching recall `target` on the sample.

    Returns:
        ``(params, recall, tried)``: the first setting of the grid (cheapest first)
        whose recall reaches `target`, else the best one seen; `tried` lists every
        setting measured with its recall.
    """
    chain = list(index_chain(index))
    kinds = [index_kind(i) for i in chain]
    nlist = next((int(i.nlist) for i in chain if isinstance(i, faiss.IndexIVF)), 1)
    tried: list[dict[str, Any]] = []
    best: tuple[float, dict[str, float]] = (-1.0, {})
    for params in _grid(kinds, nlist):
        recall = measure(index, queries, query_ids, truth, params)
        tried.append({**params, "recall": round(recall, 4)})
        if recall > best[0]:
            best = (recall, params)
        if recall >= target:
            return params, recall, tried
    if best[0] < target:
        logger.warning(
            "recall@%d %.3f is below the target %.2f with every setting tried; a larger "
            "index type (or --max-memory) would recall more",
            truth.shape[1],
            best[0],
            target,
        )
    return best[1], best[0], tried
