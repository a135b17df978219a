"""The training stages of `distill`, each judged by the retrieval gate.

1. ``layer-local`` (cut students of a BERT-style model): each replaced block of layers
   is trained alone against the uncut model's hidden states (`distill.transformer.layerwise`).
2. ``teacher``: the student's top layers learn the teacher's rankings over cached
   frozen-prefix states (`distill.transformer.frozen`), or, for students whose layers cannot run
   alone (MPNet) and for the MSE losses, the whole student end to end
   (`distill.transformer.train`).

A stage whose validation nDCG@10 ends below its start is reverted: the student leaves
it with the weights it entered with.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distill.config import DistillConfig, StudentSpec
from distill.gate import ValidationSet, score
from distill.report import Stage
from distill.targets import TargetMap
from distill.texts import TrainingTexts
from distill.transformer.frozen import PrefixStates, Top, ValidationStates, train_top
from distill.transformer.layerwise import (
    boundaries,
    check_supported,
    distill_layers,
    layers_to_train,
    plan_blocks,
)
from distill.transformer.mining import RankExamples, mine_rank_examples
from distill.transformer.schedule import Schedule, mixed_precision
from distill.transformer.states import StateStore, fill_store
from distill.transformer.student import layer_subset
from distill.transformer.train import (
    FidelityEvaluator,
    RetrievalEvaluator,
    train_student,
    training_objective,
)
from search.assets import cache_dir
from search.encoder import TorchEncoder
from search.evaluate import corpus_texts

logger = logging.getLogger(__name__)

TEACHER_STAGE_EPOCHS = 4.0
"""Passes over the mined examples the teacher stage may make (early stopping and the
budget usually end it sooner)."""


@dataclass
class Run:
    """What every stage of one distill run reads.

    Attributes:
        train, held: Training and held-out texts; `teacher_vecs` holds the teacher's
            embeddings of ``train + held`` in that order (normalised, float32), and
            `targets` the same mapped into the student's space (`tmap`).
        student_key: Identity of the untrained student's weights (store keys).
        val: The ``tune`` validation set: it picks checkpoints and keeps or reverts
            stages (the candidates are judged on another, `distill.candidates`).
        work: Scratch and checkpoint folder of this run.
        bf16: Fill the state stores and train under autocast bf16.
    """

    config: DistillConfig
    spec: StudentSpec
    texts: TrainingTexts
    train: list[str]
    held: list[str]
    teacher_vecs: np.ndarray
    targets: np.ndarray
    student: Any
    student_key: str
    assistant_folder: Path | None
    window: int
    tmap: TargetMap
    val: ValidationSet
    work: Path
    progress: bool = True
    bf16: bool = False
    stages: list[Stage] = field(default_factory=list)

    @property
    def backbone(self) -> Any:
        return self.student[0].auto_model

    def score(self) -> float:
        """Validation nDCG@10 of the student as it is now (the real model, no cache)."""
        with mixed_precision(self.bf16):
            return score(TorchEncoder.from_model(self.student, "student"), self.val)


def states_dir(key: str) -> Path:
    """Where hidden-state stores live: ``cache_dir()/states/<key>``."""
    return cache_dir() / "states" / hashlib.blake2b(key.encode(), digest_size=10).hexdigest()


def layerwise_applies(run: Run) -> bool:
    """True for a cut of a pretrained BERT-style model with a dropped block to train."""
    if run.spec.layers is None or run.assistant_folder is None:
        return False
    try:
        check_supported(run.backbone)
    except ValueError:
        return False
    return bool(layers_to_train(plan_blocks(run.spec.layers, _uncut_layers(run))))


def _uncut_layers(run: Run) -> int:
    """Encoder layers of the uncut model, from its saved config."""
    assert run.assistant_folder is not None
    from transformers import AutoConfig

    config: Any = AutoConfig.from_pretrained(str(run.assistant_folder), local_files_only=True)
    return int(config.num_hidden_layers)


def _judge(run: Run, name: str, before: float, after: float, entry: dict[str, Any]) -> bool:
    kept = after >= before
    stage = Stage(name=name, before=round(before, 4), after=round(after, 4), kept=kept, **entry)
    run.stages.append(stage)
    logger.info(
        "stage %s: validation nDCG@10 %.4f -> %.4f (%s)",
        name,
        before,
        after,
        "kept" if kept else "reverted",
    )
    return kept


def layerwise_stage(run: Run, seconds: float, before: float) -> tuple[StateStore, int] | None:
    """Train the cut student's replacing layers against the uncut model (the assistant).

    Returns:
        The assistant's state store and the boundary of the first trained block's
        input (the frozen prefix's output, for the teacher stage), or None when the
        stage was reverted.
    """
    from sentence_transformers import SentenceTransformer

    assert run.spec.layers is not None and run.assistant_folder is not None
    t0 = time.perf_counter()
    uncut = SentenceTransformer(str(run.assistant_folder), device="cpu", local_files_only=True)
    uncut.max_seq_length = run.window
    uncut.to(run.student.device)
    blocks = plan_blocks(run.spec.layers, _uncut_layers(run))
    texts = run.train + run.held
    store = fill_store(
        states_dir(f"{run.student_key}|uncut|{run.window}"),
        uncut,
        texts,
        boundaries(blocks),
        model_hash=run.student_key,
        progress=run.progress,
        bf16=run.bf16,
    )
    del uncut
    initial = copy.deepcopy(run.student.state_dict())
    schedule = Schedule(
        lr=run.config.layerwise_lr,
        seconds=max(0.0, seconds - (time.perf_counter() - t0)),
        epochs=run.config.layerwise_epochs,
        seed=run.config.seed,
        bf16=run.bf16,
    )
    train_rows = list(range(len(run.train)))
    held_rows = list(range(len(run.train), len(texts)))
    results = distill_layers(
        run.student,
        blocks,
        store,
        run.work / "layerwise",
        (train_rows, held_rows),
        schedule,
        progress=run.progress,
    )
    after = run.score()
    entry = {
        "assistant": str(run.assistant_folder),
        "blocks": [r.as_dict() for r in results],
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if _judge(run, "layer-local", before, after, entry):
        return store, layers_to_train(blocks)[0].start
    run.student.load_state_dict(initial)
    return None


def _rank_examples(run: Run) -> RankExamples:
    train_vecs = run.teacher_vecs[: len(run.train)]
    docs = set(run.texts.by_source.get("documents", []))
    query_like = run.texts.all_queries() | set(run.texts.by_source.get("sentences", []))
    d_idx = [i for i, t in enumerate(run.train) if t in docs]
    q_idx = [i for i, t in enumerate(run.train) if t in query_like]
    examples = mine_rank_examples(
        [run.train[i] for i in q_idx],
        train_vecs[q_idx],
        [run.train[i] for i in d_idx],
        train_vecs[d_idx],
        seed=run.config.seed,
    )
    logger.info("mined %d ranking examples over %d documents", len(examples), len(d_idx))
    return examples


def _validation_states(run: Run, prefix: Any, key: str, boundary: int) -> ValidationStates:
    doc_ids, doc_texts = corpus_texts(run.val.corpus)
    query_ids = list(run.val.queries)
    texts = doc_texts + [run.val.queries[q] for q in query_ids]
    store = fill_store(
        states_dir(f"{key}|val"),
        prefix,
        texts,
        [boundary],
        model_hash=key,
        progress=False,
        bf16=run.bf16,
    )
    n = len(doc_ids)
    return ValidationStates(
        store,
        boundary,
        doc_ids,
        list(range(n)),
        query_ids,
        list(range(n, n + len(query_ids))),
        run.val.qrels,
    )


def frozen_prefix(run: Run) -> int:
    """Index of the first layer the teacher stage trains (the layers below are frozen)."""
    n = len(run.backbone.encoder.layer)
    return max(0, n - run.config.top_layers)


def _prefix_states(
    run: Run, assistant: tuple[StateStore, int] | None
) -> tuple[int, StateStore, int, ValidationStates]:
    """The first trained layer, the training texts' store and boundary of its input,
    and the validation texts' states there.

    The layer-local stage's store is reused when it holds that input; else the
    student's frozen prefix runs once over the texts (`distill.transformer.states`).
    """
    first = frozen_prefix(run) if assistant is None else assistant[1]
    first = min(first, len(run.backbone.encoder.layer) - 1)
    prefix = layer_subset(run.student, tuple(range(first)), "the student") if first else None
    key = f"{run.student_key}|prefix{first}|{run.window}"
    if prefix is None:  # nothing frozen but the embeddings: boundary 0 of the student
        prefix = copy.deepcopy(run.student)
    val = _validation_states(run, prefix, key, first)
    if assistant is not None:
        return first, assistant[0], assistant[1], val
    texts = run.train + run.held
    store = fill_store(
        states_dir(key),
        prefix,
        texts,
        [first],
        model_hash=key,
        progress=run.progress,
        bf16=run.bf16,
    )
    return first, store, first, val


def teacher_stage(
    run: Run, seconds: float, assistant: tuple[StateStore, int] | None
) -> dict[str, Any]:
    """Train the student's top layers on the teacher's rankings, frozen prefix cached.

    Args:
        assistant: The layer-local stage's store and its prefix boundary, reused for
            the training texts when that stage trained the same layers.
    """
    t0 = time.perf_counter()
    first, store, boundary, val = _prefix_states(run, assistant)
    examples = _rank_examples(run)
    rows = {t: i for i, t in enumerate(run.train)}
    initial = copy.deepcopy(run.student.state_dict())
    schedule = Schedule(
        lr=run.config.lr,
        seconds=max(0.0, seconds - (time.perf_counter() - t0)),
        epochs=TEACHER_STAGE_EPOCHS,
        batch_size=run.config.batch_size,
        eval_steps=run.config.eval_steps,
        seed=run.config.seed,
        bf16=run.bf16,
    )
    result = train_top(
        Top(run.student, first),
        PrefixStates(store, boundary, rows),
        examples,
        val,
        run.work / "teacher",
        schedule,
        temperature=run.config.temperature,
        progress=run.progress,
    )
    entry = {
        "trained_layers": list(range(first, len(run.backbone.encoder.layer))),
        "train_examples": len(examples),
        **result.as_dict(),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if not _judge(run, "teacher", result.before, result.best, entry):
        run.student.load_state_dict(initial)
    return entry


def end_to_end_stage(run: Run, seconds: float, before: float) -> dict[str, Any]:
    """The whole student trained end to end against the teacher (sentence-transformers'
    trainer), for students whose layers cannot run alone and for the MSE losses."""
    config = run.config
    targets = run.targets
    heldout = FidelityEvaluator(run.held, targets[len(run.train) :])
    rank = _rank_examples(run) if config.loss == "rank" else None
    dataset, loss = training_objective(
        run.student,
        config.loss,
        texts=run.train,
        targets=targets[: len(run.train)],
        teacher=run.teacher_vecs[: len(run.train)],
        rank=rank,
        temperature=config.temperature,
    )
    initial = copy.deepcopy(run.student.state_dict())
    info = train_student(
        run.student,
        dataset,
        loss,
        RetrievalEvaluator(run.val) if config.loss == "rank" else heldout,
        run.work / "e2e",
        Schedule(
            lr=config.lr,
            seconds=seconds,
            epochs=config.epochs,
            batch_size=config.batch_size,
            warmup=0.1,
            eval_steps=config.eval_steps,
            seed=config.seed,
            bf16=run.bf16,
        ),
    )
    info["train_examples"] = len(dataset)
    if config.loss == "rank" and info["best_score"] is not None:
        after = float(info["best_score"])  # checkpoints were chosen by this score
    else:
        after = run.score()
    entry = {**info, "seconds": info["train_seconds"]}
    if not _judge(run, "end-to-end", before, after, entry):
        run.student.load_state_dict(initial)
    return entry
