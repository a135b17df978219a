"""Hybrid search: fuse a dense ranking and a BM25 ranking into one.

Pure functions over ranked ``(key, score)`` lists, best first. Two methods:

- ``rrf`` (reciprocal rank fusion): ``w / (c + rank_dense) + (1 - w) / (c + rank_bm25)``,
  ranks from 1; a document absent from a list gets nothing from it.
- ``convex``: ``w * minmax(dense) + (1 - w) * minmax(bm25)``, each list min-max
  normalised to [0, 1] on its own; a document absent from a list gets 0 from it.

``w`` is the dense weight in [0, 1]. `fuse` is the one entry point: the service and
the evaluation both call it, with the one default, `DEFAULT_FUSION` at
`DEFAULT_WEIGHT` (the setting the project's hybrid results are reported with).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from enum import Enum
from typing import Literal, TypeVar

from search.types import Hit, Results

K = TypeVar("K", bound=Hashable)


class Fusion(str, Enum):
    """How the two rankings are combined."""

    RRF = "rrf"
    CONVEX = "convex"


DEFAULT_FUSION = Fusion.CONVEX
DEFAULT_WEIGHT = 0.5
RRF_C = 60
DEFAULT_DEPTH = 100  # candidates each side retrieves before fusing


def default_mode(bm25_available: bool) -> Literal["hybrid", "dense"]:
    """The search mode used when a caller names none: ``hybrid`` where the index holds
    a BM25 index, else ``dense``. Hybrid ranks better than either side alone
    (docs/benchmarks.md, hybrid search) at a small cost per query (docs/serving.md)."""
    return "hybrid" if bm25_available else "dense"


def as_fusion(method: Fusion | str) -> Fusion:
    """`method` as a `Fusion`.

    Raises:
        ValueError: not one of the methods; the message lists them.
    """
    try:
        return Fusion(method)
    except ValueError:
        choices = ", ".join(f.value for f in Fusion)
        raise ValueError(f"unknown fusion method {method!r}; use one of {choices}") from None


def _validate(weight: float, c: int) -> None:
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1] (the dense share), got {weight}")
    if c < 0:
        raise ValueError(f"the RRF constant must be at least 0, got {c}")


def _ranked(scores: dict[K, float], order: list[K]) -> list[tuple[K, float]]:
    """Best first; ties keep first-seen order."""
    pos = {key: i for i, key in enumerate(order)}
    return sorted(scores.items(), key=lambda kv: (-kv[1], pos[kv[0]]))


def _first_seen(*lists: Sequence[tuple[K, float]]) -> list[K]:
    return list(dict.fromkeys(key for ranked in lists for key, _ in ranked))


def rrf(
    dense: Sequence[tuple[K, float]],
    sparse: Sequence[tuple[K, float]],
    *,
    weight: float = 0.5,
    c: int = RRF_C,
) -> list[tuple[K, float]]:
    """Weighted reciprocal rank fusion of two rankings (best first); scores are ignored.

    Returns:
        ``(key, fused score)`` for every key in either list, best first.
    """
    _validate(weight, c)
    fused: dict[K, float] = {}
    for share, ranked in ((weight, dense), (1.0 - weight, sparse)):
        for rank, (key, _) in enumerate(ranked, start=1):
            fused[key] = fused.get(key, 0.0) + share / (c + rank)
    return _ranked(fused, _first_seen(dense, sparse))


def min_max(scores: Sequence[float]) -> list[float]:
    """Scale to [0, 1] by ``(s - min) / (max - min)``; all-equal scores become 1.0."""
    if not scores:
        return []
    lo, hi = min(scores), max(scores)
    if hi == lo:
        return [1.0] * len(scores)
    return [(s - lo) / (hi - lo) for s in scores]


def convex(
    dense: Sequence[tuple[K, float]],
    sparse: Sequence[tuple[K, float]],
    *,
    weight: float = 0.5,
) -> list[tuple[K, float]]:
    """``weight * minmax(dense) + (1 - weight) * minmax(sparse)``, best first."""
    _validate(weight, 0)
    fused: dict[K, float] = {}
    for share, ranked in ((weight, dense), (1.0 - weight, sparse)):
        for (key, _), norm in zip(ranked, min_max([s for _, s in ranked]), strict=True):
            fused[key] = fused.get(key, 0.0) + share * norm
    return _ranked(fused, _first_seen(dense, sparse))


def fuse(
    dense: Sequence[tuple[K, float]],
    sparse: Sequence[tuple[K, float]],
    *,
    method: Fusion | str = DEFAULT_FUSION,
    weight: float = DEFAULT_WEIGHT,
    c: int = RRF_C,
) -> list[tuple[K, float]]:
    """Fuse two rankings with `method` (``rrf`` or ``convex``); see the module doc.

    Args:
        dense: ``(key, score)`` best first (cosine similarities).
        sparse: ``(key, score)`` best first (BM25 scores).
        method: The fusion method.
        weight: The dense share in [0, 1].
        c: The RRF constant (``rrf`` only).

    Returns:
        ``(key, fused score)`` for every key in either list, best first; ties keep
        the order keys are first seen in, dense list first.

    Raises:
        ValueError: an unknown method, a weight outside [0, 1] or a negative `c`.
    """
    method = as_fusion(method)
    if method is Fusion.RRF:
        return rrf(dense, sparse, weight=weight, c=c)
    return convex(dense, sparse, weight=weight)


def fuse_results(
    dense: Results,
    sparse: Results,
    *,
    method: Fusion | str = DEFAULT_FUSION,
    weight: float = DEFAULT_WEIGHT,
    c: int = RRF_C,
    k: int = 100,
) -> Results:
    """Fuse BEIR result dicts query by query with `fuse`, keeping the top `k` of each.

    Each side is ranked by score, best first (ties keep the dict's order). Queries
    missing from one side are fused with an empty ranking. Inputs are not modified.
    """
    out: Results = {}
    for qid in dict.fromkeys([*dense, *sparse]):
        d = sorted(dense.get(qid, {}).items(), key=lambda kv: -kv[1])
        s = sorted(sparse.get(qid, {}).items(), key=lambda kv: -kv[1])
        out[qid] = dict(fuse(d, s, method=method, weight=weight, c=c)[:k])
    return out


def fuse_hits(
    dense: Sequence[Hit],
    sparse: Sequence[Hit],
    *,
    k: int,
    method: Fusion | str = DEFAULT_FUSION,
    weight: float = DEFAULT_WEIGHT,
    c: int = RRF_C,
) -> list[Hit]:
    """Fuse dense and BM25 hits (each best first) with `fuse`.

    Returns:
        The top `k` documents of either list, best first, with their fused scores.
    """
    by_id = {h.id: h for h in (*sparse, *dense)}
    fused = fuse(
        [(h.id, h.score) for h in dense],
        [(h.id, h.score) for h in sparse],
        method=method,
        weight=weight,
        c=c,
    )[:k]
    return [Hit(i, score, by_id[i].title, by_id[i].text) for i, score in fused]
