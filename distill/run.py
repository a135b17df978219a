"""`distill`: label training texts with the teacher, build and train a student, save it
with a report and a model card."""

from __future__ import annotations

import logging
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distill.config import DistillConfig, StudentSpec
from distill.gate import (
    ValidationSet,
    judge_gain,
    reserve_train_queries,
    sample_corpus,
    score,
    score_queries,
    teacher_qrels,
)
from distill.layerwise import check_supported
from distill.report import model_card
from distill.stages import (
    Run,
    end_to_end_stage,
    layerwise_applies,
    layerwise_stage,
    teacher_stage,
)
from distill.student import build_student, count_parameters, match_window
from distill.targets import fit_target_map
from distill.texts import TrainingTexts, collect_texts
from distill.train import FidelityEvaluator
from search.assets import embeddings_dir, model_hash, resolve_model
from search.atomic import atomic_write_json, atomic_write_text, staged_folder
from search.devices import resolve_device
from search.embed_cache import EmbeddingCache
from search.encoder import TorchEncoder, available_backends
from search.types import Qrels, Queries

logger = logging.getLogger(__name__)

REPORT = "distill_report.json"
_MAP_SAMPLE = 1000


def folder_size_mb(folder: Path) -> float:
    """Size of a model folder's weights and config on disk (exports excluded)."""
    total = sum(
        p.stat().st_size
        for p in folder.rglob("*")
        if p.is_file() and "onnx" not in p.relative_to(folder).parts
    )
    return total / 2**20


def _seconds_per_text(encode: Any, texts: list[str]) -> float:
    encode(texts[:8])  # warm-up: first calls pay for allocations and thread start-up
    t0 = time.perf_counter()
    encode(texts)
    return (time.perf_counter() - t0) / len(texts)


def _publish(student: Any, out: Path, report: dict[str, Any]) -> None:
    """Save the student with its report and model card, swapped in whole."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with staged_folder(out) as tmp:
        student.save(str(tmp))
        report["student_hash"] = model_hash(tmp)
        report["size_mb"]["student"] = round(folder_size_mb(tmp), 1)
        atomic_write_json(tmp / REPORT, report)
        atomic_write_text(tmp / "README.md", model_card(report))


def _validation_set(
    config: DistillConfig,
    val_queries: Queries,
    val_qrels: Qrels,
    held: list[str],
    query_texts: set[str],
    teacher: TorchEncoder,
    cache: EmbeddingCache,
) -> ValidationSet:
    """Train queries with qrels when the dataset has them, else teacher-judged queries."""
    if val_queries:
        judged = {d for rels in val_qrels.values() for d in rels}
        corpus = sample_corpus(config.data, judged, config.val_docs, config.seed)
        return ValidationSet(corpus, val_queries, val_qrels, "train qrels")
    picked = [t for t in held if t in query_texts][: config.val_queries]
    if len(picked) < 5:  # no query-like texts held out: use held-out texts of any kind
        picked = held[: config.val_queries]
    queries = {f"v{i}": t for i, t in enumerate(picked)}
    corpus = sample_corpus(config.data, set(), config.val_docs, config.seed)
    qrels = teacher_qrels(teacher, cache, queries, corpus)
    return ValidationSet(corpus, queries, qrels, "teacher top-10")


@dataclass
class _Labelled:
    """Training texts split into train and held-out, with the teacher's labels."""

    texts: TrainingTexts
    train: list[str]
    held: list[str]
    vecs: np.ndarray
    stats: Any
    val_queries: Queries
    val_qrels: Qrels


def label(
    config: DistillConfig, teacher: TorchEncoder, cache: EmbeddingCache, progress: bool
) -> _Labelled:
    """Collect the training texts, hold some out, and label them all with the teacher
    (through its embedding cache: an interrupted labelling resumes)."""
    val_queries, val_qrels = reserve_train_queries(config.data, config.val_queries, config.seed)
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
    logger.info("labelling %d texts with the teacher (cached: %d)", len(pool), len(cache))
    vecs, stats = cache.encode(teacher, train + held, desc="teacher labels", progress=progress)
    return _Labelled(texts, train, held, vecs, stats, val_queries, val_qrels)


def _student_key(spec: StudentSpec, folder: Path | None, teacher: str) -> str:
    base = model_hash(folder) if folder is not None else f"teacher-{teacher}"
    return f"{base}|{spec.layers}"


def train_stages(run: Run, before: float, targets: np.ndarray, heldout: FidelityEvaluator) -> None:
    """Run the training stages in `run.config.max_minutes`; each is kept only when it
    raises validation nDCG@10 (`distill.stages`)."""
    config = run.config
    budget = 60 * config.max_minutes
    t0 = time.perf_counter()
    assistant = None
    if layerwise_applies(run):
        assistant = layerwise_stage(run, budget * config.layerwise_share, before)
        before = run.stages[-1]["after"] if assistant is not None else before
    left = max(0.0, budget - (time.perf_counter() - t0))
    try:
        check_supported(run.backbone)
        cached = config.loss == "rank"
    except ValueError:
        cached = False
    if cached:
        teacher_stage(run, left, assistant)
    else:
        end_to_end_stage(run, left, before, targets, heldout)


def distill(config: DistillConfig, *, progress: bool = True) -> dict[str, Any]:
    """Run a whole distillation; return its report (also written to ``out/``).

    Stages: label (teacher embeddings, cached) -> build the student -> train
    (layer-local, then teacher; each gated on validation nDCG@10) -> publish ->
    compress (ONNX, int8 behind its gate) -> report.
    """
    if StudentSpec.parse(config.student).static is not None:  # --student static[:...]
        from distill.static import distill_static

        return distill_static(config, progress=progress)
    t_start = time.perf_counter()
    prepared = _prepare(config, progress)
    run = prepared.run
    t_train = time.perf_counter()
    train_stages(run, prepared.gate["before"], prepared.targets, prepared.heldout)
    train_seconds = round(time.perf_counter() - t_train, 1)
    _close_gate(prepared.gate, run, prepared.before_q)
    report, teacher_spt = _report(prepared, train_seconds)
    report["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    run.student.to("cpu")
    _publish(run.student, config.out, report)
    shutil.rmtree(run.work, ignore_errors=True)
    if config.compress:
        _compress_published(config, report, run.held[:64], run.val, teacher_spt)
        report["wall_seconds"] = round(time.perf_counter() - t_start, 1)
        atomic_write_json(config.out / REPORT, report)
        atomic_write_text(config.out / "README.md", model_card(report))
    return report


@dataclass
class _Prepared:
    """Everything `distill` sets up before training: the run, the teacher, the gate's
    opening record and the measures taken on the untrained student."""

    run: Run
    teacher: TorchEncoder
    teacher_folder: Path
    labelled: _Labelled
    device: str
    targets: np.ndarray
    heldout: FidelityEvaluator
    fid_before: dict[str, float]
    gate: dict[str, Any]
    before_q: dict[str, float]


def _prepare(config: DistillConfig, progress: bool) -> _Prepared:
    """Label the texts, build the untrained student, fit the target map, and open the
    gate on the validation set."""
    spec = config.validate()
    device = resolve_device(config.device)
    # resolved first: a misspelt student fails now, not after labelling
    student_folder = resolve_model(spec.model) if spec.model is not None else None
    teacher_folder = resolve_model(config.teacher)
    teacher = TorchEncoder(teacher_folder, name=config.teacher, device=device)
    cache = EmbeddingCache(embeddings_dir(), teacher.model_hash, teacher.dim)
    labelled = label(config, teacher, cache, progress)
    train, held, teacher_vecs = labelled.train, labelled.held, labelled.vecs
    student = build_student(spec, teacher.model, student_folder).to(device)
    shipped_window = student.max_seq_length
    window = match_window(student, teacher.model, config.max_seq_length)
    sample = train[:_MAP_SAMPLE]
    s0 = student.encode(sample, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    tmap = fit_target_map(teacher_vecs[: len(sample)], s0)
    targets = tmap.apply(teacher_vecs)
    heldout = FidelityEvaluator(held, targets[len(train) :])
    fid_before = heldout(student)
    val = _validation_set(
        config,
        labelled.val_queries,
        labelled.val_qrels,
        held,
        labelled.texts.all_queries(),
        teacher,
        cache,
    )
    student_cache = None
    if student_folder is not None and spec.layers is None and window == shipped_window:
        # the shipped model's cached vectors; stale for another window or fewer layers
        shipped_hash = model_hash(student_folder)
        student_cache = EmbeddingCache(embeddings_dir(), shipped_hash, int(s0.shape[1]))
    gate, before_q = _open_gate(teacher, cache, student, student_cache, val)
    run = Run(
        config=config,
        spec=spec,
        texts=labelled.texts,
        train=train,
        held=held,
        teacher_vecs=teacher_vecs,
        student=student,
        student_key=_student_key(spec, student_folder, teacher.model_hash),
        assistant_folder=student_folder,
        window=window,
        tmap=tmap,
        val=val,
        work=config.out.with_name(f".{config.out.name}.work"),
        progress=progress,
    )
    return _Prepared(
        run,
        teacher,
        teacher_folder,
        labelled,
        device,
        targets,
        heldout,
        fid_before,
        gate,
        before_q,
    )


def _report(prepared: _Prepared, train_seconds: float) -> tuple[dict[str, Any], float]:
    """The report of a trained run (compression is added after publishing), and the
    teacher's seconds a text on the held-out texts its speed ratio was measured on."""
    run, teacher, config = prepared.run, prepared.teacher, prepared.run.config
    student, labelled = run.student, prepared.labelled
    last = run.stages[-1] if run.stages else {}
    fid_before, fid_after = prepared.fid_before, prepared.heldout(student)
    speed_texts = run.held[:64]
    teacher_spt = _seconds_per_text(lambda t: teacher.encode(t), speed_texts)
    emitted = TorchEncoder.from_model(student, "student")  # batched as the teacher is
    student_spt = _seconds_per_text(lambda t: emitted.encode(t), speed_texts)
    return {
        "out": str(config.out),
        "teacher": config.teacher,
        "teacher_hash": teacher.model_hash,
        "student": config.student,
        "data": str(config.data),
        "device": prepared.device,
        "texts": {
            "by_source": labelled.texts.counts(),
            "total": len(run.train) + len(run.held),
            "heldout": len(run.held),
            "teacher_labelled_now": labelled.stats.encoded,
        },
        "target_map_explained": round(run.tmap.explained, 4),
        "fidelity": {
            "before": {"cosine": fid_before["fidelity_cosine"], "mse": fid_before["fidelity_mse"]},
            "after": {"cosine": fid_after["fidelity_cosine"], "mse": fid_after["fidelity_mse"]},
            "cosine": fid_after["fidelity_cosine"],
        },
        "stages": run.stages,
        "steps": int(last.get("steps", 0)),
        "train_examples": int(last.get("train_examples", 0)),
        "train_seconds": train_seconds,
        "gate": prepared.gate,
        "params": {
            "teacher": count_parameters(teacher.model),
            "student": count_parameters(student),
        },
        "size_mb": {"teacher": round(folder_size_mb(prepared.teacher_folder), 1)},
        "speed_ratio": round(teacher_spt / student_spt, 2),
        "config": _config_facts(config, run.window),
    }, teacher_spt


def _open_gate(
    teacher: TorchEncoder,
    cache: EmbeddingCache,
    student: Any,
    student_cache: EmbeddingCache | None,
    val: ValidationSet,
) -> tuple[dict[str, Any], dict[str, float]]:
    """The gate's record before training, and the untrained student's per-query scores."""
    gate: dict[str, Any] = {
        "metric": "ndcg@10",
        "source": val.source,
        "queries": len(val.queries),
        "docs": len(val.corpus),
        "teacher": score(teacher, val, cache),
    }
    untrained = TorchEncoder.from_model(student, "initial", model_hash="x")
    before_q = score_queries(untrained, val, student_cache)
    gate["before"] = float(np.mean(list(before_q.values())))
    return gate, before_q


def _close_gate(gate: dict[str, Any], run: Run, before_q: dict[str, float]) -> None:
    """Score the weights the stages kept; record which were emitted, why, and how sure
    the gain is."""
    kept = [s for s in run.stages if s["kept"]]
    trained = TorchEncoder.from_model(run.student, "trained")
    after_q = score_queries(trained, run.val) if kept else before_q
    gate["after"] = float(np.mean(list(after_q.values())))
    gate["emitted"] = "trained" if kept else "initial"
    gate["why"] = (
        f"stages kept: {', '.join(s['name'] for s in kept)}"
        if kept
        else "no stage raised validation nDCG@10 above the untrained student"
    )
    gate.update(judge_gain(after_q, before_q))


def _config_facts(config: DistillConfig, window: int) -> dict[str, Any]:
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


def _compress_published(
    config: DistillConfig,
    report: dict[str, Any],
    texts: list[str],
    val: ValidationSet,
    teacher_spt: float,
) -> None:
    """Compress the published student; record it and the served artifact's speed ratio
    (on the same held-out `texts` as the torch student's, `teacher_spt` s a text)."""
    report["compression"] = compress(config.out, texts, val, min_cosine=config.int8_min_cosine)
    served = served_speed(config.out, report["compression"])
    if served is not None:
        backend, docs_per_s = served
        report["served_speed_ratio"] = {
            "backend": backend,
            "ratio": round(docs_per_s * teacher_spt, 2),
            "docs_per_s": round(docs_per_s, 2),
            "teacher_docs_per_s": round(1 / teacher_spt, 3),
        }


def served_speed(folder: Path, compression: dict[str, Any]) -> tuple[str, float] | None:
    """(backend, texts/s) of the artifact ``auto`` serves from `folder`
    (`search.encoder.available_backends` decides), as `compress` measured it; None when
    that is torch (no export)."""
    backend = available_backends(folder)[0]
    rate = {
        "onnx-int8": compression.get("int8", {}).get("int8_docs_per_s"),
        "onnx": compression.get("onnx", {}).get("onnx_docs_per_s"),
    }.get(backend)
    return (backend, float(rate)) if rate else None


def compress(
    folder: Path, texts: list[str], val: ValidationSet, *, min_cosine: float
) -> dict[str, Any]:
    """ONNX export (checked against torch), then int8 behind the retrieval gate.

    The int8 gate scores fp32 and int8 ONNX on the validation set (never test queries)
    and refuses int8 when nDCG@10 drops more than 1 %. `min_cosine` is the int8-to-fp32
    cosine that decides how many MatMuls stay fp32.
    """
    from distill.export import CompressionError, export_onnx
    from distill.quantize import QualityGate, quantize_int8, retrieval_metric

    out: dict[str, Any] = {}
    try:
        out["onnx"] = export_onnx(folder, texts)
        evaluate = retrieval_metric(val.corpus, val.queries, val.qrels)
        gate = QualityGate(min_cosine=min_cosine, evaluate=evaluate)
        out["int8"] = quantize_int8(folder, texts, gate)
    except CompressionError as exc:
        logger.warning("compression stopped: %s", exc)
        out["error"] = str(exc)
    return out
