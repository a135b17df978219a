"""`distill --student static`: steps 2–4 of `distill.run` for a static student.

2. **Train**: the plain model2vec distillation of the teacher, adapted to the
   teacher's labels of the training texts and re-weighted by the corpus's token
   frequencies (`distill.static.model`).
3. **Gate**: plain, adapted and re-weighted are scored on the validation queries
   (`distill.gate.score`); the best is emitted.
4. **Report**, with the dense weight of BM25 + static hybrid search chosen on the same
   validation queries, and the emitted model's speed.

The output folder is model2vec's format (`search.static_encoder`) with
``distill_report.json`` and a model card.
"""

from __future__ import annotations

import itertools
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distill.candidates import Candidate, docs_per_second
from distill.gate import ValidationSet, score, score_queries
from distill.report import (
    FusionChoice,
    Gate,
    Sizes,
    Stage,
    StaticFidelity,
    StaticReport,
    StaticSpeed,
    folder_size_mb,
)
from distill.setup import Setup, text_counts
from distill.static.card import model_card
from distill.static.model import adapt, encode, plain_model, reweight, with_dtype
from distill.static_options import StaticOptions
from distill.targets import fidelity, fit_target_map
from search.embed_cache import EmbeddingCache
from search.encoder import Encoder
from search.evaluate import bm25_results, corpus_texts, dense_results, score_results
from search.hybrid import Fusion, fuse_results
from search.static_encoder import STATIC_BACKEND, StaticEncoder

FUSION_WEIGHTS = tuple(round(0.1 * i, 1) for i in range(1, 10))
_SPEED_TEXTS = 2000


@dataclass
class Trained:
    """The candidate models of a run, in the order they were made, how each was made,
    and the gate's verdict once `StaticJob.gate` has run.

    Attributes:
        candidates: StaticModels by name (``plain``, ``adapted``, ``adapted+reweight``).
        stages: The stages that made them, with their seconds (and, after the gate,
            their validation scores).
        fidelity: Held-out cosine of the plain and adapted models to their targets.
        plain_cached: The plain distillation came from the cache.
        timings: Seconds of the plain distillation.
        gate: The gate's record (set by `StaticJob.gate`).
    """

    candidates: dict[str, Any]
    stages: list[Stage]
    fidelity: StaticFidelity
    plain_cached: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    gate: Gate | None = None

    @property
    def emitted(self) -> Any:
        """The StaticModel the gate chose (the plain one before the gate ran)."""
        name = self.gate.emitted if self.gate and self.gate.emitted else "plain"
        return self.candidates[name]


class StaticJob:
    """Train, gate, report and save a static student (`distill.run.Job`)."""

    def train(self, setup: Setup, options: StaticOptions | None = None) -> Trained:
        options = options or setup.spec.static
        if options is None:
            raise ValueError(f"--student {setup.config.student!r} is not a static student spec")
        t0 = time.perf_counter()
        plain, cached = plain_model(setup.teacher, options, setup.device)
        labelled = setup.labelled
        trained = train_candidates(
            plain,
            labelled.train,
            labelled.held,
            labelled.vecs,
            options,
            setup.device,
            seed=setup.config.seed,
        )
        trained.plain_cached = cached
        trained.timings["plain_seconds"] = time.perf_counter() - t0
        return trained

    def gate(self, setup: Setup, trained: Trained) -> None:
        teacher = teacher_score(setup.labeler, setup.val, setup.cache)
        trained.gate = gate_candidates(trained, setup.val, teacher)

    def report(self, setup: Setup, trained: Trained) -> StaticReport:
        return static_report(setup, trained)

    def save(self, trained: Trained, folder: Path) -> None:
        trained.emitted.save_pretrained(folder)

    def card(self, report: StaticReport) -> str:
        return model_card(report)


def train_candidates(
    plain: Any,
    train: list[str],
    held: list[str],
    vecs: np.ndarray,
    options: StaticOptions,
    device: str = "cpu",
    *,
    seed: int = 42,
) -> Trained:
    """The plain model and, when ``options.adapt``, its adapted and re-weighted versions,
    each stored as ``options.dtype``.

    Args:
        plain: The plain StaticModel (not modified).
        train: Training texts; held: held-out texts.
        vecs: float32 (len(train) + len(held), teacher dim): the teacher's embeddings of
            ``train + held``, in that order.
        options: The static options.
        device: Torch device of the adaptation.
        seed: Seed of the adaptation.
    """
    candidates = {"plain": plain}
    stages: list[Stage] = []
    fid = StaticFidelity()
    if options.adapt:
        t0 = time.perf_counter()
        tmap = fit_target_map(vecs[: min(len(train), 2000)], encode(plain, train[:2000]))
        targets = tmap.apply(vecs)
        train_targets, held_targets = targets[: len(train)], targets[len(train) :]
        adapted = adapt(plain, train, train_targets, held, held_targets, options, device, seed=seed)
        fid = StaticFidelity(
            target_map_explained=round(tmap.explained, 4),
            heldout_cosine_plain=_fidelity(plain, held, held_targets),
            heldout_cosine_adapted=_fidelity(adapted, held, held_targets),
        )
        candidates["adapted"] = adapted
        stages.append(Stage(name="adapt", seconds=round(time.perf_counter() - t0, 1)))
        if options.reweight > 0:
            t0 = time.perf_counter()
            candidates["adapted+reweight"] = reweight(adapted, train + held, options.reweight)
            stages.append(Stage(name="reweight", seconds=round(time.perf_counter() - t0, 1)))
    candidates = {name: with_dtype(m, options.dtype) for name, m in candidates.items()}
    return Trained(candidates, stages, fid)


def _fidelity(model: Any, texts: list[str], targets: np.ndarray) -> float:
    return round(fidelity(encode(model, texts), targets)["cosine"], 4)


def gate_candidates(trained: Trained, val: ValidationSet, teacher: float | None) -> Gate:
    """Score each candidate on the validation set and pick the one to emit; each stage
    of `trained` gets the scores before and after it (updated in place).

    Returns:
        The gate's record: scores, the emitted candidate's name and its gain over the
        plain model.
    """
    scores = {
        name: score(StaticEncoder.from_model(m, name), val)
        for name, m in trained.candidates.items()
    }
    pairs = itertools.pairwise(scores.values())
    for stage, (before, after) in zip(trained.stages, pairs, strict=False):
        stage.before, stage.after, stage.kept = before, after, after > before
    emitted = max(scores, key=lambda name: scores[name])  # ties: the earlier, simpler one
    return Gate(
        source=val.source,
        queries=len(val.queries),
        docs=len(val.corpus),
        teacher=teacher,
        before=scores["plain"],
        after=scores[emitted],
        candidates=scores,
        emitted=emitted,
        why=f"highest validation nDCG@10 of {', '.join(scores)}",
        gain=round(scores[emitted] - scores["plain"], 4),
    )


def static_report(setup: Setup, trained: Trained) -> StaticReport:
    """The run's report, with the emitted model's fusion weight and speed measured now
    (``wall_seconds`` and the student's hash and size are left to publishing)."""
    config, labelled, teacher = setup.config, setup.labelled, setup.teacher
    assert trained.gate is not None and setup.spec.static is not None
    model = trained.emitted
    encoder = StaticEncoder.from_model(model, "static")
    texts = labelled.train + labelled.held
    timings = {"label_seconds": setup.seconds, **trained.timings}
    return StaticReport(
        out=str(config.out),
        teacher=config.teacher,
        teacher_hash=teacher.model_hash,
        student=config.student,
        data=str(config.data),
        device=setup.device,
        static=setup.spec.static.as_dict(),
        texts=text_counts(setup),
        plain_cached=trained.plain_cached,
        fidelity=trained.fidelity,
        stages=trained.stages,
        train_seconds=round(sum(s.seconds for s in trained.stages), 1),
        gate=trained.gate,
        hybrid=choose_fusion(encoder, setup.val),
        speed=measure_speed(encoder, texts, labelled.stats.docs_per_s, setup.val, _form(setup)),
        dim=model.dim,
        vocabulary=len(model.tokens),
        size_mb=Sizes(teacher=round(folder_size_mb(teacher.folder), 1))
        if teacher.folder
        else Sizes(),
        timings={k: round(v, 1) for k, v in timings.items()},
    )


def static_candidate(setup: Setup, folder: Path, sample: list[str]) -> Candidate:
    """A static student with the default options, as one candidate of a transformer
    run (`distill.candidates`): its variants are chosen between on the ``tune``
    queries, the chosen one saved to `folder` and measured on the ``select`` ones."""
    options = StaticOptions()
    trained = StaticJob().train(setup, options)
    trained.gate = gate_candidates(trained, setup.tune, None)
    folder.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(folder, ignore_errors=True)
    trained.emitted.save_pretrained(folder)
    encoder = StaticEncoder.from_model(trained.emitted, "static")
    return Candidate(
        name="static",
        trained=True,
        folder=folder,
        backend=STATIC_BACKEND,
        per_query=score_queries(encoder, setup.val),
        docs_per_s=docs_per_second(encoder, sample),
        size_mb=folder_size_mb(folder),
        tune=trained.gate.after,
        facts={"variant": trained.gate.emitted, "dims": options.dims},
    )


def choose_fusion(encoder: StaticEncoder, val: ValidationSet) -> FusionChoice:
    """The convex fusion weight of dense + BM25 (`search.hybrid`) with the best
    nDCG@10 on the validation set, with that of each side alone."""
    dense, _ = dense_results(encoder, val.corpus, val.queries, progress=False)
    sparse, _ = bm25_results(val.corpus, val.queries)
    grid = {}
    for weight in FUSION_WEIGHTS:
        fused = fuse_results(dense, sparse, method=Fusion.CONVEX, weight=weight)
        grid[weight] = round(score_results(val.qrels, fused)["ndcg@10"], 4)
    best = max(grid, key=lambda w: (grid[w], -abs(w - 0.5)))  # ties: nearer the middle
    return FusionChoice(
        method=Fusion.CONVEX.value,
        weight=best,
        ndcg10=grid[best],
        dense=round(score_results(val.qrels, dense)["ndcg@10"], 4),
        bm25=round(score_results(val.qrels, sparse)["ndcg@10"], 4),
        grid={str(w): s for w, s in grid.items()},
        chosen_on=f"{val.source}, {len(val.queries)} queries x {len(val.corpus)} docs",
    )


def teacher_score(teacher: Encoder, val: ValidationSet, cache: EmbeddingCache) -> float | None:
    """The teacher's validation nDCG@10 when its embeddings are all cached, else None
    (a static run does not spend minutes of teacher time on a reference number)."""
    _, texts = corpus_texts(val.corpus)
    _, missing = cache.lookup(texts + list(val.queries.values()))
    return None if missing else score(teacher, val, cache)


def _form(setup: Setup) -> str:
    return f"torch {setup.precision.precision}"


def measure_speed(
    encoder: StaticEncoder,
    texts: list[str],
    teacher_docs_per_s: float,
    val: ValidationSet,
    teacher_form: str = "torch fp32",
) -> StaticSpeed:
    """Texts/s of the static model on the training texts and ms a validation query,
    against the teacher's texts/s on the same texts as the embedding cache recorded
    (in `teacher_form`, the precision it labelled in)."""
    sample = texts[:_SPEED_TEXTS]
    encoder.encode(sample[:64])
    t0 = time.perf_counter()
    encoder.encode(sample)
    docs_per_s = len(sample) / (time.perf_counter() - t0)
    queries = list(val.queries.values())[:100]
    t0 = time.perf_counter()
    for q in queries:
        encoder.encode([q])
    query_ms = 1000 * (time.perf_counter() - t0) / max(len(queries), 1)
    speed = StaticSpeed(docs_per_s=round(docs_per_s, 1), query_ms=round(query_ms, 4))
    if np.isfinite(teacher_docs_per_s):
        speed.teacher_docs_per_s = round(teacher_docs_per_s, 2)
        speed.teacher_form = teacher_form
        speed.ratio = round(docs_per_s / teacher_docs_per_s, 1)
    return speed
