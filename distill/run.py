"""`distill`: label training texts with the teacher, build and train a student, save it
with a report and a model card."""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

from distill.config import DistillConfig
from distill.student import build_student, count_parameters
from distill.targets import fit_target_map
from distill.texts import collect_texts
from distill.train import FidelityEvaluator, train_student
from search.assets import atomic_write_text, embeddings_dir, model_hash, resolve_model
from search.embed_cache import EmbeddingCache
from search.encoder import TorchEncoder

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
    t0 = time.perf_counter()
    encode(texts)
    return (time.perf_counter() - t0) / len(texts)


def model_card(report: dict[str, Any]) -> str:
    """A model card (README.md) for the student folder, from its report."""
    fid, texts = report["fidelity"], report["texts"]
    sources = ", ".join(f"{k} {v}" for k, v in texts["by_source"].items())
    params, size = report["params"], report["size_mb"]
    rows = [
        ("training texts", f"{texts['total']} ({sources})"),
        ("held-out texts", texts["heldout"]),
        (
            "steps",
            f"{report['steps']} of {report['max_steps']} (stopped by {report['stopped_by']})",
        ),
        ("training time", f"{report['train_seconds']} s"),
        ("parameters", f"{params['student']:,} (teacher {params['teacher']:,})"),
        ("size on disk", f"{size['student']:.1f} MB (teacher {size['teacher']:.1f} MB)"),
        (
            "fidelity, cosine to targets",
            f"{fid['before']['cosine']:.4f} -> {fid['after']['cosine']:.4f}",
        ),
        ("target map energy kept", f"{report['target_map_explained']:.4f}"),
        ("speed vs teacher (same held-out texts)", f"{report['speed_ratio']:.1f}x"),
    ]
    lines = [
        f"# distilsearch student of {report['teacher']}",
        "",
        f"Distilled by embedding matching (MSE) from `{report['teacher']}` "
        f"(hash `{report['teacher_hash']}`) into `{report['student']}`.",
        "",
        "| fact | value |",
        "| --- | --- |",
        *(f"| {k} | {v} |" for k, v in rows),
        "",
        "Load it with `SentenceTransformer(path)`; BEIR scores: `distilsearch eval --model PATH`.",
    ]
    if report.get("beir"):
        lines += ["", "```json", json.dumps(report["beir"], indent=2), "```"]
    return "\n".join(lines) + "\n"


def _publish(student: Any, out: Path, report: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    student.save(str(tmp))
    report["student_hash"] = model_hash(tmp)
    report["size_mb"]["student"] = round(folder_size_mb(tmp), 1)
    atomic_write_text(tmp / REPORT, json.dumps(report, indent=2) + "\n")
    atomic_write_text(tmp / "README.md", model_card(report))
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def distill(config: DistillConfig, *, progress: bool = True) -> dict[str, Any]:
    """Run a whole distillation; return its report (also written to ``out/``)."""
    spec = config.validate()
    t_start = time.perf_counter()
    teacher_folder = resolve_model(config.teacher)
    teacher = TorchEncoder(teacher_folder, name=config.teacher)
    texts = collect_texts(
        config.data,
        max_texts=config.max_texts,
        generic=config.generic_texts,
        extra=config.extra_texts,
        seed=config.seed,
    )
    pool = texts.all
    if len(pool) < 20:
        raise ValueError(f"only {len(pool)} training texts found in {config.data}; need >= 20")
    order = list(range(len(pool)))
    random.Random(config.seed).shuffle(order)
    n_hold = max(8, min(300, int(config.holdout * len(pool))))
    held, train = [pool[i] for i in order[:n_hold]], [pool[i] for i in order[n_hold:]]

    cache = EmbeddingCache(embeddings_dir(), teacher.model_hash, teacher.dim)
    logger.info("labelling %d texts with the teacher (cached: %d)", len(pool), len(cache))
    teacher_vecs, label_stats = cache.encode(
        teacher, train + held, desc="teacher labels", progress=progress
    )
    student = build_student(spec, teacher.model)
    if config.max_seq_length:
        student.max_seq_length = config.max_seq_length
    sample = train[:_MAP_SAMPLE]
    s0 = student.encode(sample, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    tmap = fit_target_map(teacher_vecs[: len(sample)], s0)
    targets = tmap.apply(teacher_vecs)
    heldout = FidelityEvaluator(held, targets[len(train) :])
    before = heldout(student)

    work = config.out.with_name(f".{config.out.name}.work")
    info = train_student(
        student,
        train,
        targets[: len(train)],
        heldout,
        work,
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        max_minutes=config.max_minutes,
        eval_steps=config.eval_steps,
        seed=config.seed,
        teacher=teacher_vecs[: len(train)] if config.loss == "mse+structure" else None,
    )
    after = heldout(student)
    if after["fidelity_cosine"] < before["fidelity_cosine"]:
        logger.warning(
            "training lowered held-out fidelity (%.4f -> %.4f)",
            before["fidelity_cosine"],
            after["fidelity_cosine"],
        )
    speed_texts = held[:64]
    teacher_spt = _seconds_per_text(lambda t: teacher.encode(t), speed_texts)
    student_spt = _seconds_per_text(
        lambda t: student.encode(t, batch_size=32, normalize_embeddings=True), speed_texts
    )
    report: dict[str, Any] = {
        "out": str(config.out),
        "teacher": config.teacher,
        "teacher_hash": teacher.model_hash,
        "student": config.student,
        "data": str(config.data),
        "texts": {
            "by_source": texts.counts(),
            "total": len(pool),
            "heldout": len(held),
            "teacher_labelled_now": label_stats.encoded,
        },
        "target_map_explained": round(tmap.explained, 4),
        "fidelity": {
            "before": {"cosine": before["fidelity_cosine"], "mse": before["fidelity_mse"]},
            "after": {"cosine": after["fidelity_cosine"], "mse": after["fidelity_mse"]},
            "cosine": after["fidelity_cosine"],
        },
        **info,
        "params": {
            "teacher": count_parameters(teacher.model),
            "student": count_parameters(student),
        },
        "size_mb": {"teacher": round(folder_size_mb(teacher_folder), 1)},
        "speed_ratio": round(teacher_spt / student_spt, 2),
        "wall_seconds": round(time.perf_counter() - t_start, 1),
        "config": {
            "epochs": config.epochs,
            "batch_size": config.batch_size,
            "lr": config.lr,
            "max_minutes": config.max_minutes,
            "max_texts": config.max_texts,
            "loss": config.loss,
            "seed": config.seed,
        },
    }
    _publish(student, config.out, report)
    shutil.rmtree(work, ignore_errors=True)
    return report
