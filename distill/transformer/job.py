"""`distill` for a transformer student: steps 2–4 of `distill.run`.

2. **Train**: measure the shipped starting model untrained, in its served form, at
   its own token window and at the teacher's (`distill.candidates`); train it (or the
   cut the spec names) at the window the ``tune`` queries prefer among those fast
   enough (`distill.transformer.stages`: layer-local for a cut, then against the
   teacher; each stage kept only when it raises ``tune`` nDCG@10), and measure it the
   same way; add the candidates the caller supplies (a static student).
3. **Gate**: `distill.candidates.choose` picks the candidate to emit on the ``select``
   queries training never saw.
4. **Report**: the candidates' table and the choice, the stages, the teacher's
   speeds and precision, fidelity and sizes.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import JsonValue

from distill.candidates import SPEED_SAMPLE, Candidate, choose, docs_per_second
from distill.compress.pipeline import compress
from distill.compress.quantize import retrieval_metric
from distill.config import StudentSpec
from distill.gate import judge_gain, score, score_queries
from distill.report import (
    Choice,
    Fidelity,
    Gate,
    Params,
    ServedSpeed,
    Sizes,
    TeacherSpeed,
    TransformerFidelity,
    TransformerReport,
    folder_size_mb,
)
from distill.setup import Setup, speed_sample, text_counts
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
from search.embed_cache import cache_for
from search.encoder import load_encoder

logger = logging.getLogger(__name__)

_MAP_SAMPLE = 1000
_CHECK_TEXTS = 64
ExtraCandidate = Callable[[Setup, Path, list[str]], Candidate]
"""Makes one more candidate: (setup, its folder, the speed sample) -> measured."""


@dataclass
class Trained:
    """A transformer run after training: the candidates measured, the run the stages
    read and wrote, and the choice once made.

    Attributes:
        run: The trained student's run.
        heldout: Fidelity of the student to its targets on the held-out texts;
            `fid_before` its value before training.
        candidates: Every candidate, measured as served.
        teacher_q: The teacher's nDCG@10 of each ``select`` query.
        speed: The teacher's speeds on the same sample.
        gate: The trained student against its untrained start on the ``select``
            queries, with the emitted candidate.
        choice: `distill.candidates.choose`'s verdict (set by `TransformerJob.gate`).
    """

    run: Run
    heldout: FidelityEvaluator
    fid_before: dict[str, float]
    candidates: list[Candidate]
    teacher_q: dict[str, float]
    speed: TeacherSpeed
    gate: Gate
    train_seconds: float = 0.0
    choice: Choice | None = None
    compression: dict[str, dict[str, JsonValue]] = field(default_factory=dict)

    @property
    def emitted(self) -> Candidate:
        name = self.choice.emitted if self.choice else self.candidates[-1].name
        return next(c for c in self.candidates if c.name == name)


class TransformerJob:
    """Train, gate, report and save a transformer student (`distill.run.Job`).

    Args:
        extra: Makers of more candidates (the static student), run after training.
    """

    def __init__(self, extra: Sequence[tuple[str, ExtraCandidate]] = ()) -> None:
        self.extra = list(extra)

    def train(self, setup: Setup) -> Trained:
        work = _work_dir(setup)
        sample = speed_sample(setup.val, SPEED_SAMPLE, setup.config.seed)
        speed = teacher_speed(setup, sample)
        compression: dict[str, dict[str, JsonValue]] = {}
        shipped = shipped_candidates(setup, work, sample, compression)
        window = training_window(setup, shipped, speed)
        t0 = time.perf_counter()
        run, heldout, fid_before = prepare(setup, window, work)
        train_stages(run)
        seconds = round(time.perf_counter() - t0, 1)
        trained = trained_candidate(setup, run, work, sample, compression)
        candidates = [*shipped, trained]
        for name, make in self.extra:
            candidates.append(make(setup, work / "candidates" / name, sample))
        teacher_q = score_queries(setup.labeler, setup.val, setup.cache)
        gate = start_gate(setup, shipped, trained)
        return Trained(
            run, heldout, fid_before, candidates, teacher_q, speed, gate, seconds, None, compression
        )

    def gate(self, setup: Setup, trained: Trained) -> None:
        speed = trained.speed
        forced = None
        if setup.config.emit == "trained":
            forced = next(c.name for c in trained.candidates if c.name.startswith("trained"))
        trained.choice = choose(
            trained.candidates,
            trained.teacher_q,
            speed.fp32_docs_per_s,
            setup.config.min_speedup,
            speed.fastest_docs_per_s,
            forced=forced,
        )
        trained.gate.emitted = trained.choice.emitted
        trained.gate.why = trained.choice.reason
        logger.info("emitted %s: %s", trained.choice.emitted, trained.choice.reason)

    def report(self, setup: Setup, trained: Trained) -> TransformerReport:
        return transformer_report(setup, trained)

    def save(self, trained: Trained, folder: Path) -> None:
        shutil.copytree(trained.emitted.folder, folder, dirs_exist_ok=True)
        shutil.rmtree(trained.run.work, ignore_errors=True)

    def card(self, report: TransformerReport) -> str:
        return model_card(report)


def _work_dir(setup: Setup) -> Path:
    out = setup.config.out
    return out.with_name(f".{out.name}.work")


def teacher_speed(setup: Setup, sample: list[str]) -> TeacherSpeed:
    """The fp32 teacher's docs/s on `sample`, and its labeler's (bf16 when chosen)."""
    fp32 = docs_per_second(setup.teacher, sample, repeats=1)
    if setup.labeler is setup.teacher:
        return TeacherSpeed(
            fp32_docs_per_s=round(fp32, 3), fastest_form="torch fp32", fastest_docs_per_s=fp32
        )
    fastest = docs_per_second(setup.labeler, sample, repeats=1)
    return TeacherSpeed(
        fp32_docs_per_s=round(fp32, 3),
        fastest_form=f"torch {setup.precision.precision}",
        fastest_docs_per_s=round(max(fp32, fastest), 3),
    )


def served_candidate(
    name: str,
    folder: Path,
    setup: Setup,
    sample: list[str],
    compression: dict[str, dict[str, JsonValue]],
    *,
    trained: bool,
    window: int,
) -> Candidate:
    """Export `folder` to ONNX and int8 (the int8 gate on the ``tune`` queries; torch
    without ``config.compress``), then measure what ``auto`` serves from it:
    ``select`` nDCG@10 by query and docs/s."""
    tune = setup.tune
    record: dict[str, JsonValue] = {}
    if setup.config.compress:
        vectors = embeddings_dir()  # the select set reuses the tune set's documents
        evaluate = retrieval_metric(tune.corpus, tune.queries, tune.qrels, cache_root=vectors)
        check = setup.labelled.held[:_CHECK_TEXTS]
        record = compress(folder, check, evaluate, min_cosine=setup.config.int8_min_cosine)
    compression[name] = record
    encoder = load_encoder(folder, backend="auto" if record else "torch", precision="fp32")
    tune_score = _tune_score(record, encoder.backend)
    logger.info("candidate %s served as %s", name, encoder.backend)
    int8 = record.get("int8")
    return Candidate(
        name=name,
        trained=trained,
        folder=folder,
        backend=encoder.backend,
        per_query=score_queries(encoder, setup.val, cache_for(encoder, embeddings_dir())),
        docs_per_s=docs_per_second(encoder, sample),
        size_mb=_artifact_mb(folder, encoder.backend),
        window=window,
        tune=tune_score if tune_score is not None else score(encoder, tune),
        facts={"int8": int8.get("reason") if isinstance(int8, dict) else None},
    )


def _tune_score(record: dict[str, JsonValue], backend: str) -> float | None:
    int8 = record.get("int8")
    if not isinstance(int8, dict):
        return None
    value = int8.get("int8_score" if backend == "onnx-int8" else "fp32_score")
    return float(value) if isinstance(value, int | float) else None


def _artifact_mb(folder: Path, backend: str) -> float:
    onnx = folder / "onnx"
    if backend == "onnx-int8":
        return sum(p.stat().st_size for p in onnx.glob("model_int8.onnx*")) / 2**20
    if backend == "onnx":
        return sum(p.stat().st_size for p in onnx.glob("model.onnx*")) / 2**20
    return folder_size_mb(folder)


def candidate_windows(setup: Setup, shipped: int) -> list[int]:
    """The token windows the shipped model is measured at: ``--max-seq-length`` alone
    when given, else its own window and the teacher's (distinct, ascending)."""
    if setup.config.max_seq_length:
        return [setup.config.max_seq_length]
    return sorted({shipped, int(setup.teacher.model.max_seq_length or shipped)})


def shipped_candidates(
    setup: Setup, work: Path, sample: list[str], compression: dict[str, dict[str, JsonValue]]
) -> list[Candidate]:
    """The untrained starting model at each of `candidate_windows`, measured as served
    (none when the student is a layer subset of the teacher)."""
    from sentence_transformers import SentenceTransformer

    if setup.spec.model is None:
        return []
    source = resolve_model(setup.spec.model)
    model = SentenceTransformer(str(source), device="cpu", local_files_only=True)
    out = []
    for window in candidate_windows(setup, int(model.max_seq_length or 512)):
        name = f"shipped@{window}"
        folder = work / "candidates" / name
        shutil.rmtree(folder, ignore_errors=True)
        model.max_seq_length = window
        model.save(str(folder))
        out.append(
            served_candidate(name, folder, setup, sample, compression, trained=False, window=window)
        )
    return out


def training_window(setup: Setup, shipped: list[Candidate], speed: TeacherSpeed) -> int | None:
    """The window to train at: the untrained candidate's with the best ``tune`` score
    among those fast enough (else the fastest); None (the run's default) without
    untrained candidates."""
    if not shipped:
        return setup.config.max_seq_length
    need = setup.config.min_speedup * speed.fp32_docs_per_s
    fast = [c for c in shipped if c.docs_per_s >= need] or [
        max(shipped, key=lambda c: c.docs_per_s)
    ]
    best = max(fast, key=lambda c: (c.tune if c.tune is not None else c.score, c.docs_per_s))
    logger.info("training at %s tokens, the window of %s", best.window, best.name)
    return best.window


def _student_key(spec: StudentSpec, folder: Path | None, teacher: str) -> str:
    base = model_hash(folder) if folder is not None else f"teacher-{teacher}"
    return f"{base}|{spec.layers}"


def prepare(
    setup: Setup, window: int | None, work: Path
) -> tuple[Run, FidelityEvaluator, dict[str, float]]:
    """Build the untrained student at `window`, fit the target map, and measure its
    fidelity to the targets on the held-out texts."""
    config, spec, labelled = setup.config, setup.spec, setup.labelled
    folder = resolve_model(spec.model) if spec.model is not None else None
    student = build_student(spec, setup.teacher.model, folder).to(setup.device)
    window = match_window(student, setup.teacher.model, window)
    sample = labelled.train[:_MAP_SAMPLE]
    s0 = student.encode(sample, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    tmap = fit_target_map(labelled.vecs[: len(sample)], s0)
    targets = tmap.apply(labelled.vecs)
    heldout = FidelityEvaluator(labelled.held, targets[len(labelled.train) :])
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
        val=setup.tune,
        work=work,
        progress=setup.progress,
        bf16=setup.precision.precision == "bf16",
    )
    return run, heldout, heldout(student)


def train_stages(run: Run) -> None:
    """Run the training stages in `run.config.max_minutes`; each is kept only when it
    raises ``tune`` nDCG@10 (`distill.transformer.stages`)."""
    config = run.config
    budget = 60 * config.max_minutes
    t0 = time.perf_counter()
    try:
        check_supported(run.backbone)
        cached = config.loss == "rank" and not config.end_to_end
    except ValueError:
        cached = False
    layerwise = layerwise_applies(run)
    before = run.score() if layerwise or not cached else None
    assistant = None
    if layerwise and before is not None:
        assistant = layerwise_stage(run, budget * config.layerwise_share, before)
        if assistant is not None and run.stages[-1].after is not None:
            before = run.stages[-1].after
    left = max(0.0, budget - (time.perf_counter() - t0))
    if cached:
        teacher_stage(run, left, assistant)
    elif before is not None:
        end_to_end_stage(run, left, before)


def trained_candidate(
    setup: Setup,
    run: Run,
    work: Path,
    sample: list[str],
    compression: dict[str, dict[str, JsonValue]],
) -> Candidate:
    """The student as training left it, saved and measured as served."""
    layers = "" if setup.spec.layers is None else "cut" + "-".join(map(str, setup.spec.layers))
    name = f"trained{layers}@{run.window}"
    folder = work / "candidates" / name
    shutil.rmtree(folder, ignore_errors=True)
    run.student.to("cpu")
    run.student.save(str(folder))
    candidate = served_candidate(
        name, folder, setup, sample, compression, trained=True, window=run.window
    )
    candidate.facts["stages_kept"] = [s.name for s in run.stages if s.kept]
    return candidate


def start_gate(setup: Setup, shipped: list[Candidate], trained: Candidate) -> Gate:
    """The trained student against its untrained start at the same window, on the
    ``select`` queries (against the first candidate when none shares the window)."""
    start = next((c for c in shipped if c.window == trained.window), None)
    val = setup.val
    gate = Gate(
        source=val.source,
        queries=len(val.queries),
        docs=len(val.corpus),
        teacher=None,
        before=start.score if start else trained.score,
        after=trained.score,
    )
    if start is not None:
        gain = judge_gain(trained.per_query, start.per_query)
        gate.gain, gate.gain_ci95, gate.gain_p = gain.gain, gain.ci95, gain.p
    return gate


def transformer_report(setup: Setup, trained: Trained) -> TransformerReport:
    """The report: the candidates' table and the choice, and what training did."""
    run, teacher, config = trained.run, setup.teacher, setup.config
    emitted = trained.emitted
    last = run.stages[-1].model_extra or {} if run.stages else {}
    fid_before, fid_after = trained.fid_before, trained.heldout(run.student)
    trained.gate.teacher = round(float(np.mean(list(trained.teacher_q.values()))), 4)
    speed = trained.speed
    return TransformerReport(
        out=str(config.out),
        teacher=config.teacher,
        teacher_hash=teacher.model_hash,
        student=config.student,
        data=str(config.data),
        device=setup.device,
        texts=text_counts(setup),
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
        speed_ratio=round(emitted.docs_per_s / speed.fp32_docs_per_s, 2),
        teacher_docs_per_s=speed.fp32_docs_per_s,
        config=config_facts(setup, run.window),
        compression=trained.compression.get(emitted.name),
        served_speed_ratio=ServedSpeed(
            backend=emitted.backend,
            ratio=round(emitted.docs_per_s / speed.fp32_docs_per_s, 2),
            docs_per_s=round(emitted.docs_per_s, 2),
            teacher_docs_per_s=speed.fp32_docs_per_s,
        ),
        choice=trained.choice,
        teacher_speed=speed,
        precision=setup.precision.as_dict(),
    )


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) else 0


def config_facts(setup: Setup, window: int) -> dict[str, JsonValue]:
    """The settings a report records."""
    config = setup.config
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
        "end_to_end",
        "min_speedup",
        "val_queries",
        "tune_queries",
    )
    facts: dict[str, JsonValue] = {n: getattr(config, n) for n in names}
    return {**facts, "max_seq_length": window, "precision": setup.precision.precision}
