"""Gating a trained student on measured retrieval quality, never on loss alone.

A validation set is carved from data the student may see, never from test queries:
the dataset's ``train`` queries with their qrels when it has them (those queries are
then kept out of the training texts), else held-out queries judged by the teacher's
own top-10 ("teacher agreement"). Documents: every judged document plus a seeded
sample of the corpus, so the cost stays bounded on large corpora.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from search.corpus import iter_documents, load_beir
from search.embed_cache import EmbeddingCache
from search.encoder import Encoder
from search.evaluate import corpus_texts, evaluate, exact_search
from search.significance import paired_test
from search.types import Corpus, Qrels, Queries

if TYPE_CHECKING:
    from distill.config import DistillConfig
    from distill.texts import Labelled


@dataclass
class ValidationSet:
    """Queries, judgements and documents to score students on.

    Attributes:
        source: ``train qrels`` or ``teacher top-10``.
    """

    corpus: Corpus
    queries: Queries
    qrels: Qrels
    source: str


def reserve_train_queries(data: Path, n: int, seed: int) -> tuple[Queries, Qrels]:
    """Up to `n` judged ``train`` queries of a BEIR folder (empty when it has none)."""
    if not (data.is_dir() and (data / "qrels" / "train.tsv").is_file()):
        return {}, {}
    _, queries, qrels = load_beir(data, "train")
    ids = sorted(q for q in queries if q in qrels)
    keep = random.Random(seed).sample(ids, min(n, len(ids)))
    return {q: queries[q] for q in keep}, {q: qrels[q] for q in keep}


def sample_corpus(data: Path, must: set[str], size: int, seed: int) -> Corpus:
    """The documents in `must` plus a seeded sample, `size` in all when possible."""
    docs = {i: {"title": t, "text": x} for i, t, x in iter_documents(data)}
    others = sorted(set(docs) - must)
    fill = random.Random(seed).sample(others, max(0, min(len(others), size - len(must))))
    return {i: docs[i] for i in sorted(must & set(docs)) + fill}


def validation_set(
    config: DistillConfig, labelled: Labelled, teacher: Encoder, cache: EmbeddingCache
) -> tuple[ValidationSet, ValidationSet]:
    """The run's two validation sets over one sampled corpus: ``select`` (up to
    ``config.val_queries`` queries) judges the finished candidates, ``tune`` (up to
    ``config.tune_queries``) picks checkpoints and stages during training, so the
    choice between candidates is not made on the queries training was steered by.

    Queries: the reserved train queries with their qrels when the dataset has them,
    else held-out query-like texts judged by the teacher's top 10. When there are too
    few for both, they are split in the ratio of the two settings.
    """
    if labelled.val_queries:
        judged = {d for rels in labelled.val_qrels.values() for d in rels}
        corpus = sample_corpus(config.data, judged, config.val_docs, config.seed)
        queries, qrels, source = labelled.val_queries, labelled.val_qrels, "train qrels"
    else:
        query_texts = labelled.texts.all_queries()
        want = config.val_queries + config.tune_queries
        picked = [t for t in labelled.held if t in query_texts][:want]
        if len(picked) < 10:  # no query-like texts held out: use held-out texts of any kind
            picked = labelled.held[:want]
        queries = {f"v{i}": t for i, t in enumerate(picked)}
        corpus = sample_corpus(config.data, set(), config.val_docs, config.seed)
        qrels, source = teacher_qrels(teacher, cache, queries, corpus), "teacher top-10"
    ids = list(queries)
    share = config.val_queries / (config.val_queries + config.tune_queries)
    n_select = min(config.val_queries, max(1, round(share * len(ids))))
    select, tune = ids[:n_select], ids[n_select:] or ids[:n_select]
    return _subset(corpus, queries, qrels, select, source), _subset(
        corpus, queries, qrels, tune, source
    )


def _subset(
    corpus: Corpus, queries: Queries, qrels: Qrels, ids: list[str], source: str
) -> ValidationSet:
    return ValidationSet(
        corpus, {q: queries[q] for q in ids}, {q: qrels[q] for q in ids if q in qrels}, source
    )


def teacher_qrels(
    teacher: Encoder, cache: EmbeddingCache | None, queries: Queries, corpus: Corpus, k: int = 10
) -> Qrels:
    """The teacher's top-`k` documents of each query, as binary judgements."""
    doc_ids, texts = corpus_texts(corpus)
    qids = list(queries)
    qtexts = [queries[q] for q in qids]
    if cache is not None:
        dvecs, _ = cache.encode(teacher, texts, progress=False)
        qvecs, _ = cache.encode(teacher, qtexts, progress=False)
    else:
        dvecs, qvecs = teacher.encode(texts), teacher.encode(qtexts)
    results = exact_search(qvecs, dvecs, qids, doc_ids, k)
    return {q: {d: 1 for d in hits} for q, hits in results.items()}


def score(encoder: Encoder, val: ValidationSet, cache: EmbeddingCache | None = None) -> float:
    """nDCG@10 of `encoder` on the validation set."""
    report = evaluate(encoder, val.corpus, val.queries, val.qrels, cache=cache, progress=False)
    return float(report["ndcg@10"])


def score_queries(
    encoder: Encoder, val: ValidationSet, cache: EmbeddingCache | None = None
) -> dict[str, float]:
    """nDCG@10 of each validation query (their mean is `score`), for paired tests."""
    report = evaluate(encoder, val.corpus, val.queries, val.qrels, cache=cache, progress=False)
    return {q: float(v) for q, v in report["per_query_ndcg@10"].items()}


@dataclass(frozen=True)
class Gain:
    """How sure a change is: mean per-query difference, its 95 % bootstrap interval
    and the paired permutation p-value."""

    gain: float
    ci95: tuple[float, float]
    p: float


def judge_gain(after: dict[str, float], before: dict[str, float]) -> Gain:
    """How sure the gate can be of a change: mean per-query nDCG@10 difference with its
    95 % bootstrap interval and paired permutation p-value (`search.significance`).

    The validation set is a few hundred queries, so a change of a few thousandths is
    within its noise; the report says so instead of reading the sign alone.
    """
    test = paired_test(after, before)
    return Gain(
        round(test.mean_diff, 4),
        (round(test.ci_low, 4), round(test.ci_high, 4)),
        round(test.p_value, 4),
    )
