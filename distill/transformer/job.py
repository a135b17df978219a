"""`distill` for a transformer student: steps 2–4 of `distill.run`.

2. **Train**: build the untrained student (`distill.transformer.student`), give it the
   teacher's token window, fit the target map, score it on the validation queries,
   then run the training stages in ``max_minutes`` (`distill.transformer.stages`:
   layer-local, then against the teacher; each kept only when it raises validation
   nDCG@10).
3. **Gate**: score the kept weights; record which were emitted, why, and how sure the
   gain over the untrained student is.
4. **Report**: texts, stages, gate, fidelity, sizes, and the speed ratio to the
   teacher on the same held-out texts.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import JsonValue

from distill.config import DistillConfig, StudentSpec
from distill.gate import judge_gain, score, score_queries
from distill.report import (
    Fidelity,
    Gate,
    Params,
    Sizes,
    TextCounts,
    TransformerFidelity,
    TransformerReport,
    folder_size_mb,
)
from distill.setup import Setup
from distill.targets import fit_target_map
from distill.transformer.card import model_card
from distill.transformer.layerwise import check_supported
from distill.transformer.stages import (
    Run,
    end_to_end_stage,
    layerwise_applies,
    layerwise_stage,
    teacher_stage,
)
from distill.transformer.student import build_student, count_parameters, match_window
from distill.transformer.train import FidelityEvaluator
from search.assets import embeddings_dir, model_hash, resolve_model
from search.embed_cache import EmbeddingCache
from search.encoder import TorchEncoder

_MAP_SAMPLE = 1000
_SPEED_TEXTS = 64


@dataclass
class Trained:
    """A transformer run after training: the run the stages read and wrote, the
    measures taken on the untrained student, and the gate once closed.

    Attributes:
        heldout: Fidelity of the student to its targets on the held-out texts;
            `fid_before` its value before training.
        before_q: The untrained student's nDCG@10 of each validation query.
        gate: The gate's record, opened before training and closed by
            `TransformerJob.gate`.
        train_seconds: Wall time of the training stages.
    """

    run: Run
    heldout: FidelityEvaluator
    fid_before: dict[str, float]
    before_q: dict[str, float]
    gate: Gate
    train_seconds: float = 0.0


class TransformerJob:
    """Train, gate, report and save a transformer student (`distill.run.Job`)."""

    def train(self, setup: Setup) -> Trained:
        trained = prepare(setup)
        t0 = time.perf_counter()
        train_stages(trained.run, trained.gate.before)
        trained.train_seconds = round(time.perf_counter() - t0, 1)
        return trained

    def gate(self, setup: Setup, trained: Trained) -> None:
        close_gate(trained)

    def report(self, setup: Setup, trained: Trained) -> TransformerReport:
        return transformer_report(setup, trained)

    def save(self, trained: Trained, folder: Path) -> None:
        trained.run.student.to("cpu")
        trained.run.student.save(str(folder))
        shutil.rmtree(trained.run.work, ignore_errors=True)

    def card(self, report: TransformerReport) -> str:
        return model_card(report)


def _student_key(spec: StudentSpec, folder: Path | None, teacher: str) -> str:
    base = model_hash(folder) if folder is not None else f"teacher-{teacher}"
    return f"{base}|{spec.layers}"


def prepare(setup: Setup) -> Trained:
    """Build the untrained student, fit the target map, and open the gate on the
    validation set."""
    config, spec, labelled = setup.config, setup.spec, setup.labelled
    folder = resolve_model(spec.model) if spec.model is not None else None
    student = build_student(spec, setup.teacher.model, folder).to(setup.device)
    shipped_window = student.max_seq_length
    window = match_window(student, setup.teacher.model, config.max_seq_length)
    sample = labelled.train[:_MAP_SAMPLE]
    s0 = student.encode(sample, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    tmap = fit_target_map(labelled.vecs[: len(sample)], s0)
    targets = tmap.apply(labelled.vecs)
    heldout = FidelityEvaluator(labelled.held, targets[len(labelled.train) :])
    student_cache = None
    if folder is not None and spec.layers is None and window == shipped_window:
        # the shipped model's cached vectors; stale for another window or fewer layers
        student_cache = EmbeddingCache(embeddings_dir(), model_hash(folder), int(s0.shape[1]))
    gate, before_q = open_gate(setup, student, student_cache)
    run = Run(
        config=config,
        spec=spec,
        texts=labelled.texts,
        train=labelled.train,
        held=labelled.held,
        teacher_vecs=labelled.vecs,
        targets=targets,
        student=student,
        student_key=_student_key(spec, folder, setup.teacher.model_hash),
        assistant_folder=folder,
        window=window,
        tmap=tmap,
        val=setup.val,
        work=config.out.with_name(f".{config.out.name}.work"),
        progress=setup.progress,
    )
    return Trained(run, heldout, heldout(student), before_q, gate)


def open_gate(
    setup: Setup, student: Any, student_cache: EmbeddingCache | None
) -> tuple[Gate, dict[str, float]]:
    """The gate's record before training, and the untrained student's per-query scores."""
    val = setup.val
    untrained = TorchEncoder.from_model(student, "initial", model_hash="x")
    before_q = score_queries(untrained, val, student_cache)
    gate = Gate(
        source=val.source,
        queries=len(val.queries),
        docs=len(val.corpus),
        teacher=score(setup.teacher, val, setup.cache),
        before=float(np.mean(list(before_q.values()))),
    )
    return gate, before_q


def train_stages(run: Run, before: float) -> None:
    """Run the training stages in `run.config.max_minutes`; each is kept only when it
    raises validation nDCG@10 (`distill.transformer.stages`)."""
    config = run.config
    budget = 60 * config.max_minutes
    t0 = time.perf_counter()
    assistant = None
    if layerwise_applies(run):
        assistant = layerwise_stage(run, budget * config.layerwise_share, before)
        if assistant is not None and run.stages[-1].after is not None:
            before = run.stages[-1].after
    left = max(0.0, budget - (time.perf_counter() - t0))
    try:
        check_supported(run.backbone)
        cached = config.loss == "rank"
    except ValueError:
        cached = False
    if cached:
        teacher_stage(run, left, assistant)
    else:
        end_to_end_stage(run, left, before)


def close_gate(trained: Trained) -> None:
    """Score the weights the stages kept; record which were emitted, why, and how sure
    the gain is."""
    run, gate = trained.run, trained.gate
    kept = [s for s in run.stages if s.kept]
    after_q = (
        score_queries(TorchEncoder.from_model(run.student, "trained"), run.val)
        if kept
        else trained.before_q
    )
    gain = judge_gain(after_q, trained.before_q)
    gate.after = float(np.mean(list(after_q.values())))
    gate.emitted = "trained" if kept else "initial"
    gate.why = (
        f"stages kept: {', '.join(s.name for s in kept)}"
        if kept
        else "no stage raised validation nDCG@10 above the untrained student"
    )
    gate.gain, gate.gain_ci95, gate.gain_p = gain.gain, gain.ci95, gain.p


def seconds_per_text(encode: Callable[[list[str]], Any], texts: list[str]) -> float:
    """Seconds `encode` takes per text over `texts`, after a warm-up call."""
    encode(texts[:8])  # warm-up: first calls pay for allocations and thread start-up
    t0 = time.perf_counter()
    encode(texts)
    return (time.perf_counter() - t0) / len(texts)


def transformer_report(setup: Setup, trained: Trained) -> TransformerReport:
    """The report of a trained run (compression is added after publishing)."""
    run, teacher, config = trained.run, setup.teacher, setup.config
    last = run.stages[-1].model_extra or {} if run.stages else {}
    fid_before, fid_after = trained.fid_before, trained.heldout(run.student)
    speed_texts = run.held[:_SPEED_TEXTS]
    teacher_spt = seconds_per_text(lambda t: teacher.encode(t), speed_texts)
    emitted = TorchEncoder.from_model(run.student, "student")  # batched as the teacher is
    student_spt = seconds_per_text(lambda t: emitted.encode(t), speed_texts)
    return TransformerReport(
        out=str(config.out),
        teacher=config.teacher,
        teacher_hash=teacher.model_hash,
        student=config.student,
        data=str(config.data),
        device=setup.device,
        texts=TextCounts(
            by_source=setup.labelled.texts.counts(),
            total=len(run.train) + len(run.held),
            heldout=len(run.held),
            teacher_labelled_now=setup.labelled.stats.encoded,
        ),
        target_map_explained=round(run.tmap.explained, 4),
        fidelity=TransformerFidelity(
            before=Fidelity(cosine=fid_before["fidelity_cosine"], mse=fid_before["fidelity_mse"]),
            after=Fidelity(cosine=fid_after["fidelity_cosine"], mse=fid_after["fidelity_mse"]),
            cosine=fid_after["fidelity_cosine"],
        ),
        stages=run.stages,
        steps=_int(last.get("steps")),
        train_examples=_int(last.get("train_examples")),
        train_seconds=trained.train_seconds,
        gate=trained.gate,
        params=Params(
            teacher=count_parameters(teacher.model), student=count_parameters(run.student)
        ),
        size_mb=Sizes(teacher=round(folder_size_mb(teacher.folder), 1) if teacher.folder else None),
        speed_ratio=round(teacher_spt / student_spt, 2),
        teacher_docs_per_s=round(1 / teacher_spt, 3),
        config=config_facts(config, run.window),
    )


def _int(value: JsonValue) -> int:
    return int(value) if isinstance(value, int | float) else 0


def config_facts(config: DistillConfig, window: int) -> dict[str, JsonValue]:
    """The settings a report records."""
    names = (
        "epochs",
        "batch_size",
        "lr",
        "max_minutes",
        "max_texts",
        "loss",
        "temperature",
        "seed",
        "layerwise_epochs",
        "layerwise_lr",
        "layerwise_share",
        "top_layers",
    )
    return {**{n: getattr(config, n) for n in names}, "max_seq_length": window}
