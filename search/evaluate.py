"""BEIR evaluation: exact dense retrieval or BM25, scored by beir's `EvaluateRetrieval`.

Metrics come from pytrec_eval through beir; nothing here re-implements them.
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

from search.embed_cache import EmbeddingCache
from search.encoder import Encoder
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
    """BM25 (bm25s, English stopwords, Snowball stemming when PyStemmer is installed)."""
    import bm25s

    try:
        import Stemmer  # type: ignore[import-not-found]

        stemmer = Stemmer.Stemmer("english")
    except ImportError:
        stemmer = None
    doc_ids, texts = corpus_texts(corpus)
    t0 = time.perf_counter()
    retriever = bm25s.BM25()
    retriever.index(
        bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False),
        show_progress=False,
    )
    docs_per_s = len(texts) / (time.perf_counter() - t0)
    query_ids = list(queries)
    tokens = bm25s.tokenize(
        [queries[q] for q in query_ids], stopwords="en", stemmer=stemmer, show_progress=False
    )
    rows, scores = retriever.retrieve(tokens, k=min(k, len(doc_ids)), show_progress=False)
    results = {
        qid: {doc_ids[int(r)]: float(s) for r, s in zip(rrow, srow, strict=True)}
        for qid, rrow, srow in zip(query_ids, rows, scores, strict=True)
    }
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


def evaluate_hybrid(
    encoder: Encoder,
    corpus: Corpus,
    queries: Queries,
    qrels: Qrels,
    *,
    cache: EmbeddingCache | None = None,
    batch_size: int = 32,
    progress: bool = True,
    method: str = "rrf",
    weight: float = 0.5,
    rrf_c: int = 60,
    depth: int = 100,
) -> dict[str, Any]:
    """Evaluate dense + BM25 fused by `search.hybrid.fuse` on a BEIR split.

    Each side retrieves its top `depth` documents; the fused top 100 are scored.

    Returns:
        The report of `evaluate`, with ``model`` = ``hybrid(<encoder>+bm25)`` and the
        fusion settings (``fusion``, ``weight``, ``rrf_c``, ``depth``).
    """
    from search.hybrid import fuse_results

    queries = {q: t for q, t in queries.items() if q in qrels}
    t0 = time.perf_counter()
    dense, timing = dense_results(
        encoder, corpus, queries, cache=cache, batch_size=batch_size, progress=progress, k=depth
    )
    sparse, _ = bm25_results(corpus, queries, k=depth)
    results = fuse_results(dense, sparse, method=method, weight=weight, c=rrf_c, k=100)
    facts = {
        **_encoder_facts(encoder),
        "model": f"hybrid({encoder.name}+bm25)",
        "fusion": method,
        "weight": weight,
        "rrf_c": rrf_c,
        "depth": depth,
    }
    return _report(facts, qrels, results, timing, (len(queries), len(corpus)), t0)
