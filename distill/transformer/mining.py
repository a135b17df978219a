"""Ranking examples for score distillation, mined with the teacher's cached embeddings.

For every query-like text (train queries, generic queries, user texts, sentences of the
corpus) the teacher ranks the training documents; the example is the query, the
teacher's top document and one document drawn from its next `depth - 1`. The loss
(`distill.transformer.losses.RankDistillLoss`) scores each query against every document of the
batch, so one batch of b examples gives each query 2b candidates, two of them hard.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np


@dataclass
class RankExamples:
    """Columns of a ranking dataset and the teacher embeddings of each row's texts.

    Attributes:
        queries, positives, negatives: Texts, one per example.
        labels: float32 (n, 3 * teacher_dim): teacher embeddings of query, positive,
            negative, concatenated.
    """

    queries: list[str]
    positives: list[str]
    negatives: list[str]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.queries)


def mine_rank_examples(
    queries: list[str],
    query_vecs: np.ndarray,
    docs: list[str],
    doc_vecs: np.ndarray,
    *,
    depth: int = 20,
    seed: int = 42,
    chunk: int = 1024,
) -> RankExamples:
    """One (query, teacher top-1, sampled hard document) example per query.

    Args:
        queries: Query-like texts; query_vecs their teacher embeddings (normalised).
        docs: Candidate documents; doc_vecs their teacher embeddings (normalised).
        depth: The hard document is drawn from the teacher's ranks 2..depth.

    Raises:
        ValueError: fewer than 2 documents, or embeddings that do not match the texts.
    """
    if len(docs) < 2:
        raise ValueError(f"need at least 2 documents to mine ranking examples, got {len(docs)}")
    if len(queries) != len(query_vecs) or len(docs) != len(doc_vecs):
        raise ValueError("texts and teacher embeddings disagree in length")
    rng = random.Random(seed)
    depth = max(2, min(depth, len(docs)))
    qv = np.asarray(query_vecs, dtype=np.float32)
    dv = np.asarray(doc_vecs, dtype=np.float32)
    qs, pos, neg, rows = [], [], [], []
    for start in range(0, len(queries), chunk):
        scores = qv[start : start + chunk] @ dv.T
        top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
        for i, cand in enumerate(top):
            ranked = cand[np.argsort(-scores[i, cand])]
            first, hard = int(ranked[0]), int(ranked[rng.randrange(1, depth)])
            q = start + i
            if queries[q] == docs[first]:  # a document is no query of itself
                continue
            qs.append(queries[q])
            pos.append(docs[first])
            neg.append(docs[hard])
            rows.append(np.concatenate([qv[q], dv[first], dv[hard]]))
    labels = np.stack(rows) if rows else np.zeros((0, 3 * dv.shape[1]), np.float32)
    return RankExamples(qs, pos, neg, labels.astype(np.float32))
