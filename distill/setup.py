"""What every distillation stands on: the teacher in the precision it labels in, the
labelled training texts and the two validation sets (step 1 of `distill.run`)."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass

from distill.config import DistillConfig, StudentSpec
from distill.gate import ValidationSet, sample_corpus, validation_set
from distill.report import TextCounts
from distill.texts import Labelled, TextSplit, label, split_texts
from search.assets import embeddings_dir, resolve_model
from search.corpus import count_documents, fingerprint
from search.devices import resolve_device
from search.embed_cache import EmbeddingCache, cache_for
from search.encoder import Encoder, TorchEncoder
from search.evaluate import evaluate
from search.precision import PrecisionCheck, choose_precision
from search.types import DataError

logger = logging.getLogger(__name__)

PRECISION_TEXTS = 64
"""Held-out texts the teacher encodes both ways before its labels are taken in bf16."""
PRECISION_QUERIES = 100
PRECISION_DOCS = 200
"""Validation queries, and documents they are searched over, of the bf16 check."""


@dataclass
class Setup:
    """What every distillation stands on.

    Attributes:
        config: The run's settings; spec: its parsed ``--student``.
        device: Torch device of the teacher and of training.
        teacher: The teacher in fp32 (the reference every speed ratio divides by).
        labeler: The teacher as it labels: bf16 where `precision` says so, else
            `teacher` itself; `cache` holds its embeddings.
        precision: The teacher's bf16 check and the precision chosen from it (also the
            precision of the student's states and training).
        labelled: The training texts with the teacher's labels.
        val: The validation set that judges finished candidates; tune: the one that
            steers training (`distill.gate.validation_set`).
        seconds: Wall time of the set-up (teacher load, labelling, validation sets).
        progress: Show progress bars.
    """

    config: DistillConfig
    spec: StudentSpec
    device: str
    teacher: TorchEncoder
    labeler: Encoder
    cache: EmbeddingCache
    precision: PrecisionCheck
    labelled: Labelled
    val: ValidationSet
    tune: ValidationSet
    seconds: float
    progress: bool = True


def set_up(config: DistillConfig, *, progress: bool = True) -> Setup:
    """Check `config`, load the teacher, choose its precision, label the training texts
    and build the validation sets.

    Raises:
        ValueError, DistilsearchError: a setting is bad, the corpus is empty or a model
            cannot be found; all checked before any teacher work.
    """
    t0 = time.perf_counter()
    spec = config.validate()
    if count_documents(config.data) == 0:
        raise DataError(f"--data {config.data}: the corpus holds no documents; nothing to adapt to")
    device = resolve_device(config.device)
    if spec.model is not None:  # a misspelt student fails now, not after labelling
        resolve_model(spec.model)
    teacher = TorchEncoder(resolve_model(config.teacher), name=config.teacher, device=device)
    split = split_texts(config)
    # after every check of the inputs: a bad one is then the only line the user sees
    logger.info("[1/4] setting up: teacher precision, labels (cached), validation queries")
    check, labeler = teacher_precision(config, teacher, split, device)
    cache = cache_for(labeler, embeddings_dir())
    labelled = label(split, labeler, cache, progress=progress)
    val, tune = validation_set(config, labelled, labeler, cache)
    seconds = time.perf_counter() - t0
    return Setup(
        config, spec, device, teacher, labeler, cache, check, labelled, val, tune, seconds, progress
    )


def teacher_precision(
    config: DistillConfig, teacher: TorchEncoder, split: TextSplit, device: str
) -> tuple[PrecisionCheck, Encoder]:
    """The precision the teacher labels in, and the encoder that labels.

    bf16 is checked against fp32 (`search.precision`) on held-out training texts and,
    where the dataset has judged validation queries, on nDCG@10 of up to
    `PRECISION_QUERIES` of them over `PRECISION_DOCS` documents (their judged ones
    first); the outcome is cached per teacher, data and machine.
    """
    texts = split.held[:PRECISION_TEXTS]
    judge = None
    if split.val_queries:
        ids = list(split.val_queries)[:PRECISION_QUERIES]
        queries = {q: split.val_queries[q] for q in ids}
        qrels = {q: split.val_qrels[q] for q in ids}
        judged = {d for rels in qrels.values() for d in rels}
        corpus = sample_corpus(config.data, judged, PRECISION_DOCS, config.seed)

        def judge(encoder: Encoder) -> float:
            report = evaluate(encoder, corpus, queries, qrels, cache=None, progress=True)
            return float(report["ndcg@10"])

    key = f"{fingerprint(config.data)}|{config.seed}|{len(split.val_queries)}"
    check, bf16 = choose_precision(
        teacher.model,
        teacher.model_hash,
        requested=config.precision,
        device=device,
        texts=texts,
        judge=judge,
        key=key,
    )
    if bf16 is None:
        return check, teacher
    labeler = TorchEncoder.from_model(bf16, config.teacher, model_hash=teacher.model_hash)
    labeler.folder = teacher.folder
    return check, labeler


def speed_sample(val: ValidationSet, n: int, seed: int) -> list[str]:
    """`n` documents of the validation corpus every speed of a run is measured on."""
    from search.evaluate import corpus_texts

    _, texts = corpus_texts(val.corpus)
    return random.Random(seed).sample(texts, min(n, len(texts)))


def text_counts(setup: Setup) -> TextCounts:
    """The report's account of the training texts (both kinds of student)."""
    labelled = setup.labelled
    return TextCounts(
        by_source=labelled.texts.counts(),
        total=len(labelled.train) + len(labelled.held),
        heldout=len(labelled.held),
        teacher_labelled_now=labelled.stats.encoded,
    )
