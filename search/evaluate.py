"""BEIR evaluation: exact dense retrieval, BM25 or both fused, scored by beir's
`EvaluateRetrieval`.

Metrics come from pytrec_eval through beir; nothing here re-implements them. BM25
and fusion are the service's own (`search.bm25_index`, `search.hybrid`).
"""

from __future__ import annotations

import copy
import logging
import random
import time
from collections.abc import Sequence
from typing import Any

import faiss
import numpy as np

from search.bm25_index import BM25Index
from search.embed_cache import EmbeddingCache
from search.encoder import Encoder
from search.hybrid import (
    DEFAULT_DEPTH,
    DEFAULT_FUSION,
    DEFAULT_WEIGHT,
    RRF_C,
    Fusion,
    as_fusion,
    fuse_results,
)
from search.types import Corpus, Qrels, Queries, Results, document_text

logger = logging.getLogger(__name__)

K_VALUES = (1, 10, 100)
_SAMPLE_FOR_SPEED = 64


def score_results(qrels: Qrels, results: Results) -> dict[str, float]:
    """nDCG, MAP, Recall, P at 1/10/100 and MRR@10, lower-case keys (``ndcg@10``).

    `results` is copied first: beir's evaluate deletes entries in place.
    """
    from beir.retrieval.evaluation import EvaluateRetrieval

    results = copy.deepcopy(results)
    ndcg, _map, recall, precision = EvaluateRetrieval.evaluate(qrels, results, list(K_VALUES))
    mrr = EvaluateRetrieval.evaluate_custom(qrels, copy.deepcopy(results), [10], metric="mrr")
    merged: dict[str, float] = {}
    for table in (ndcg, _map, recall, precision, mrr):
        for key, value in table.items():
            name = key.lower()
            merged["precision@" + name[2:] if name.startswith("p@") else name] = float(value)
    return merged


def per_query_ndcg(qrels: Qrels, results: Results, k: int = 10) -> dict[str, float]:
    """nDCG@k of each query (pytrec_eval), for paired significance tests."""
    import pytrec_eval

    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {f"ndcg_cut.{k}"})
    scores = evaluator.evaluate(copy.deepcopy(results))
    return {qid: float(s[f"ndcg_cut_{k}"]) for qid, s in scores.items()}


def exact_search(
    query_vecs: np.ndarray,
    doc_vecs: np.ndarray,
    query_ids: Sequence[str],
    doc_ids: Sequence[str],
    k: int = 100,
) -> Results:
    """Exact inner-product top-`k` (FAISS ``IndexFlatIP``) as BEIR results."""
    index = faiss.IndexFlatIP(doc_vecs.shape[1])
    index.add(np.ascontiguousarray(doc_vecs, dtype=np.float32))
    scores, rows = index.search(np.ascontiguousarray(query_vecs, dtype=np.float32), k)
    return {
        qid: {doc_ids[r]: float(s) for s, r in zip(srow, rrow, strict=True) if r >= 0}
        for qid, srow, rrow in zip(query_ids, scores, rows, strict=True)
    }


def corpus_texts(corpus: Corpus) -> tuple[list[str], list[str]]:
    """(doc ids, texts to embed) in corpus order."""
    ids = list(corpus)
    return ids, [document_text(corpus[i].get("title", ""), corpus[i]["text"]) for i in ids]


def _measure_speed(encoder: Encoder, texts: list[str], batch_size: int) -> float:
    sample = random.Random(0).sample(texts, min(_SAMPLE_FOR_SPEED, len(texts)))
    t0 = time.perf_counter()
    encoder.encode(sample, batch_size=batch_size)
    return len(sample) / (time.perf_counter() - t0)


def dense_results(
    encoder: Encoder,
    corpus: Corpus,
    queries: Queries,
    *,
    cache: EmbeddingCache | None = None,
    batch_size: int = 32,
    k: int = 100,
    progress: bool = True,
) -> tuple[Results, dict[str, Any]]:
    """Encode corpus and queries (through `cache` when given) and search exactly.

    Returns:
        (BEIR results, timing facts: ``docs_per_s`` and ``docs_per_s_source`` —
        ``measured`` when the corpus was encoded now, ``cache`` when the throughput
        recorded with cached embeddings is used, ``sample`` when re-measured on
        64 documents because the cache held no timing).
    """
    doc_ids, texts = corpus_texts(corpus)
    query_ids = list(queries)
    query_texts = [queries[q] for q in query_ids]
    timing: dict[str, Any] = {}
    if cache is None:
        t0 = time.perf_counter()
        doc_vecs = encoder.encode(texts, batch_size=batch_size, show_progress=progress)
        timing["docs_per_s"] = len(texts) / (time.perf_counter() - t0)
        timing["docs_per_s_source"] = "measured"
        query_vecs = encoder.encode(query_texts, batch_size=batch_size)
    else:
        doc_vecs, stats = cache.encode(
            encoder,
            texts,
            batch_size=batch_size,
            desc=f"corpus ({encoder.name})",
            progress=progress,
        )
        query_vecs, _ = cache.encode(
            encoder, query_texts, batch_size=batch_size, desc="queries", progress=progress
        )
        if stats.encoded == stats.total:
            timing["docs_per_s"], timing["docs_per_s_source"] = stats.docs_per_s, "measured"
        elif np.isfinite(stats.docs_per_s):
            timing["docs_per_s"], timing["docs_per_s_source"] = stats.docs_per_s, "cache"
        else:
            timing["docs_per_s"] = _measure_speed(encoder, texts, batch_size)
            timing["docs_per_s_source"] = "sample"
    t0 = time.perf_counter()
    one = encoder.encode(query_texts[: min(32, len(query_texts))], batch_size=1)
    timing["query_ms"] = 1000 * (time.perf_counter() - t0) / max(len(one), 1)
    return exact_search(query_vecs, doc_vecs, query_ids, doc_ids, k), timing


def bm25_results(corpus: Corpus, queries: Queries, *, k: int = 100) -> tuple[Results, dict]:
    """BM25 top-`k` of each query as BEIR results (`search.bm25_index.BM25Index`).

    The index and tokeniser the service searches with; documents that share no term
    with a query are left out of its results.

    Returns:
        (BEIR results, ``{"docs_per_s": indexing throughput, "docs_per_s_source"}``).
    """
    doc_ids, texts = corpus_texts(corpus)
    t0 = time.perf_counter()
    index = BM25Index.build(texts)
    docs_per_s = len(texts) / (time.perf_counter() - t0)
    results: Results = {}
    for qid, query in queries.items():
        rows, scores = index.search(query, k)
        results[qid] = {doc_ids[int(r)]: float(s) for r, s in zip(rows, scores, strict=True)}
    return results, {"docs_per_s": docs_per_s, "docs_per_s_source": "measured (indexing)"}


def _report(
    facts: dict[str, Any],
    qrels: Qrels,
    results: Results,
    timing: dict[str, Any],
    sizes: tuple[int, int],
    started: float,
) -> dict[str, Any]:
    """The flat report both `evaluate` and `evaluate_hybrid` return."""
    report: dict[str, Any] = {**facts, **score_results(qrels, results), **timing}
    report.update(num_queries=sizes[0], num_docs=sizes[1], seconds=time.perf_counter() - started)
    report["per_query_ndcg@10"] = per_query_ndcg(qrels, results)
    return report


def _encoder_facts(encoder: Encoder) -> dict[str, Any]:
    return {
        "model": encoder.name,
        "model_hash": encoder.model_hash,
        "backend": encoder.backend,
        "dim": encoder.dim,
    }


def evaluate(
    encoder: Encoder | None,
    corpus: Corpus,
    queries: Queries,
    qrels: Qrels,
    *,
    cache: EmbeddingCache | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a dense encoder (or BM25 when `encoder` is None) on a BEIR split.

    Returns:
        A flat report: metrics (``ndcg@10``, ``recall@100``, ``map@100``, ``mrr@10``…),
        ``num_queries``, ``num_docs``, ``docs_per_s`` and how it was obtained,
        ``query_ms`` (one query at a time), ``model``, ``model_hash``, ``backend``.
        Also ``per_query_ndcg@10`` for significance tests.
    """
    queries = {q: t for q, t in queries.items() if q in qrels}
    t0 = time.perf_counter()
    if encoder is None:
        results, timing = bm25_results(corpus, queries)
        facts: dict[str, Any] = {"model": "bm25", "model_hash": None, "backend": "bm25s"}
    else:
        results, timing = dense_results(
            encoder, corpus, queries, cache=cache, batch_size=batch_size, progress=progress
        )
        facts = _encoder_facts(encoder)
    return _report(facts, qrels, results, timing, (len(queries), len(corpus)), t0)


def hybrid_results(
    encoder: Encoder,
    corpus: Corpus,
    queries: Queries,
    *,
    cache: EmbeddingCache | None = None,
    batch_size: int = 32,
    progress: bool = True,
    method: Fusion | str = DEFAULT_FUSION,
    weight: float = DEFAULT_WEIGHT,
    rrf_c: int = RRF_C,
    depth: int = DEFAULT_DEPTH,
    k: int = 100,
) -> tuple[Results, dict[str, Any]]:
    """Dense (`dense_results`) and BM25 (`bm25_results`) top-`depth`, fused by
    `search.hybrid.fuse` like the service's hybrid mode; the top `k` of each query.

    Returns:
        (BEIR results, the dense side's timing facts).
    """
    dense, timing = dense_results(
        encoder, corpus, queries, cache=cache, batch_size=batch_size, progress=progress, k=depth
    )
    sparse, _ = bm25_results(corpus, queries, k=depth)
    return fuse_results(dense, sparse, method=method, weight=weight, c=rrf_c, k=k), timing


def evaluate_hybrid(
    encoder: Encoder,
    corpus: Corpus,
    queries: Queries,
    qrels: Qrels,
    *,
    cache: EmbeddingCache | None = None,
    batch_size: int = 32,
    progress: bool = True,
    method: Fusion | str = DEFAULT_FUSION,
    weight: float = DEFAULT_WEIGHT,
    rrf_c: int = RRF_C,
    depth: int = DEFAULT_DEPTH,
) -> dict[str, Any]:
    """Evaluate dense + BM25 fused by `search.hybrid.fuse` on a BEIR split.

    Each side retrieves its top `depth` documents; the fused top 100 are scored
    (`hybrid_results`).

    Returns:
        The report of `evaluate`, with ``model`` = ``hybrid(<encoder>+bm25)`` and the
        fusion settings (``fusion``, ``weight``, ``rrf_c``, ``depth``).
    """
    method = as_fusion(method)
    queries = {q: t for q, t in queries.items() if q in qrels}
    t0 = time.perf_counter()
    results, timing = hybrid_results(
        encoder,
        corpus,
        queries,
        cache=cache,
        batch_size=batch_size,
        progress=progress,
        method=method,
        weight=weight,
        rrf_c=rrf_c,
        depth=depth,
    )
    facts = {
        **_encoder_facts(encoder),
        "model": f"hybrid({encoder.name}+bm25)",
        "fusion": method.value,
        "weight": weight,
        "rrf_c": rrf_c,
        "depth": depth,
    }
    return _report(facts, qrels, results, timing, (len(queries), len(corpus)), t0)
