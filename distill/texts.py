"""Training texts for distillation: the user's corpus, its sentences, train queries,
generic queries and user files, mixed by fixed shares, and their teacher labels.
Test queries are never read."""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from search.corpus import iter_documents, load_queries
from search.embed_cache import EmbeddingCache, EncodeStats
from search.encoder import Encoder
from search.types import Qrels, Queries, document_text

if TYPE_CHECKING:
    from distill.config import DistillConfig

logger = logging.getLogger(__name__)

# Shares of the text budget, in order of priority; unused share flows to generic text.
SHARES = {"documents": 0.6, "sentences": 0.15, "train_queries": 0.1, "user": 0.15}
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(])")


@dataclass
class TrainingTexts:
    """Texts by source (deduplicated, no empty strings)."""

    by_source: dict[str, list[str]]

    @property
    def all(self) -> list[str]:
        return [t for texts in self.by_source.values() for t in texts]

    def all_queries(self) -> set[str]:
        """Query-like texts: train queries, generic queries and user texts."""
        kinds = ("train_queries", "generic", "user")
        return {t for k in kinds for t in self.by_source.get(k, [])}

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.by_source.items()}


def split_sentences(text: str, min_chars: int = 40) -> list[str]:
    """Sentences of a text, dropping fragments shorter than `min_chars`."""
    return [s.strip() for s in _SENTENCE.split(text) if len(s.strip()) >= min_chars]


def _read_lines(path: Path) -> list[str]:
    with open(path, encoding="utf-8", errors="replace") as fh:
        return [line.strip() for line in fh if line.strip()]


def _take(pool: Sequence[str], n: int, rng: random.Random, seen: set[str]) -> list[str]:
    fresh = [t for t in dict.fromkeys(pool) if t not in seen]
    picked = fresh if len(fresh) <= n else rng.sample(fresh, n)
    seen.update(picked)
    return picked


def collect_texts(
    data: Path,
    *,
    max_texts: int,
    generic: Path | None = None,
    extra: Sequence[Path] = (),
    seed: int = 42,
    exclude: set[str] | None = None,
) -> TrainingTexts:
    """Collect up to `max_texts` training texts.

    Args:
        data: BEIR folder (its ``train`` queries are used when present) or JSONL corpus.
        max_texts: Total budget.
        generic: File of generic queries, one a line.
        extra: User files of texts, one a line.
        exclude: Texts never to use (e.g. queries reserved for validation).
    """
    rng = random.Random(seed)
    docs, sentences = [], []
    for _, title, text in iter_documents(data):
        docs.append(document_text(title, text))
        sentences.extend(split_sentences(text))
    train_queries = list(load_queries(data, "train").values()) if data.is_dir() else []
    user = [t for path in extra for t in _read_lines(path)]
    seen: set[str] = set(exclude or ())
    out: dict[str, list[str]] = {}
    for name, pool in (
        ("documents", docs),
        ("sentences", sentences),
        ("train_queries", train_queries),
        ("user", user),
    ):
        out[name] = _take(pool, int(SHARES[name] * max_texts), rng, seen)
    left = max_texts - sum(len(v) for v in out.values())
    out["generic"] = _take(_read_lines(generic), left, rng, seen) if generic and left > 0 else []
    return TrainingTexts(out)


@dataclass
class TextSplit:
    """Training texts split into train and held-out, and the queries reserved for
    validation.

    Attributes:
        texts: The collected texts by source.
        train, held: The training and held-out texts (a seeded split of ``texts.all``).
        val_queries, val_qrels: Judged train queries reserved for the two validation
            sets (`distill.gate.validation_set`; kept out of the texts), in a seeded
            order; empty when the dataset has none.
    """

    texts: TrainingTexts
    train: list[str]
    held: list[str]
    val_queries: Queries
    val_qrels: Qrels


@dataclass
class Labelled(TextSplit):
    """A `TextSplit` with the teacher's labels.

    Attributes:
        vecs: float32 ``(len(train) + len(held), teacher dim)``, normalised: the
            teacher's embeddings of ``train + held``, in that order.
        stats: The embedding cache's record of the labelling (texts encoded now,
            the teacher's texts/s).
    """

    vecs: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    stats: EncodeStats = field(default_factory=lambda: EncodeStats(0, 0, 0.0, 0.0))


def split_texts(config: DistillConfig) -> TextSplit:
    """Reserve the validation queries, collect the training texts and hold some out.

    Raises:
        ValueError: fewer than 20 training texts were found.
    """
    from distill.gate import reserve_train_queries

    wanted = config.val_queries + config.tune_queries
    val_queries, val_qrels = reserve_train_queries(config.data, wanted, config.seed)
    texts = collect_texts(
        config.data,
        max_texts=config.max_texts,
        generic=config.generic_texts,
        extra=config.extra_texts,
        seed=config.seed,
        exclude=set(val_queries.values()),
    )
    pool = texts.all
    if len(pool) < 20:
        raise ValueError(f"only {len(pool)} training texts found in {config.data}; need >= 20")
    order = list(range(len(pool)))
    random.Random(config.seed).shuffle(order)
    n_hold = max(8, min(300, int(config.holdout * len(pool))))
    held, train = [pool[i] for i in order[:n_hold]], [pool[i] for i in order[n_hold:]]
    return TextSplit(texts, train, held, val_queries, val_qrels)


def label(
    split: TextSplit, teacher: Encoder, cache: EmbeddingCache, *, progress: bool = True
) -> Labelled:
    """Label the training and held-out texts with the teacher, through its embedding
    cache (an interrupted labelling resumes)."""
    texts = split.train + split.held
    logger.info("labelling %d texts with the teacher (cached: %d)", len(texts), len(cache))
    vecs, stats = cache.encode(teacher, texts, desc="teacher labels", progress=progress)
    return Labelled(
        split.texts, split.train, split.held, split.val_queries, split.val_qrels, vecs, stats
    )
