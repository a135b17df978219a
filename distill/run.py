"""`distill`: label training texts with the teacher, build and train a student, save it
with a report and a model card."""

from __future__ import annotations

import copy
import json
import logging
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

from distill.config import DistillConfig
from distill.gate import (
    ValidationSet,
    reserve_train_queries,
    sample_corpus,
    score,
    teacher_qrels,
)
from distill.mining import mine_rank_examples
from distill.student import build_student, count_parameters, match_window
from distill.targets import fit_target_map
from distill.texts import collect_texts
from distill.train import (
    FidelityEvaluator,
    RetrievalEvaluator,
    train_student,
    training_objective,
)
from search.assets import atomic_write_text, embeddings_dir, model_hash, resolve_model
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
    t0 = time.perf_counter()
    encode(texts)
    return (time.perf_counter() - t0) / len(texts)


def _gate_line(gate: dict[str, Any]) -> str:
    return (
        f"{gate['before']:.4f} -> {gate['after']:.4f} (teacher {gate['teacher']:.4f}) on "
        f"{gate['queries']} queries x {gate['docs']} docs, {gate['source']}; "
        f"emitted {gate['emitted']} weights"
    )


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
        ("token window", report["config"].get("max_seq_length", "model default")),
        ("parameters", f"{params['student']:,} (teacher {params['teacher']:,})"),
        ("size on disk", f"{size['student']:.1f} MB (teacher {size['teacher']:.1f} MB)"),
        (
            "fidelity, cosine to targets",
            f"{fid['before']['cosine']:.4f} -> {fid['after']['cosine']:.4f}",
        ),
        ("target map energy kept", f"{report['target_map_explained']:.4f}"),
        ("speed vs teacher (same held-out texts)", f"{report['speed_ratio']:.1f}x"),
    ]
    comp = report.get("compression", {})
    if "onnx" in comp:
        onnx = comp["onnx"]
        rows.append(
            (
                "ONNX fp32",
                f"cosine to torch {onnx['cosine_mean']:.5f}, "
                f"{onnx['size_mb']:.0f} MB, {onnx['speedup']:.2f}x torch",
            )
        )
    if "int8" in comp:
        int8 = comp["int8"]
        verdict = "written" if int8["written"] else "refused"
        rows.append(("ONNX int8", f"{verdict}: {int8['reason']}"))
    method = {
        "rank": "matching the teacher's in-batch rankings of mined query-document pairs "
        "(KL divergence of the score softmaxes)",
        "mse": "embedding matching (MSE to PCA-reduced teacher embeddings)",
        "mse+structure": "embedding matching (MSE) plus the in-batch similarity structure",
    }[report["config"]["loss"]]
    if "served_speed_ratio" in report:
        served = report["served_speed_ratio"]
        rows.append(
            (f"speed vs teacher, as served ({served['backend']})", f"{served['ratio']:.1f}x")
        )
    rows.append(("retrieval gate (nDCG@10)", _gate_line(report["gate"])))
    lines = [
        f"# distilsearch student of {report['teacher']}",
        "",
        f"Distilled by {method} from `{report['teacher']}` "
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


def distill(config: DistillConfig, *, progress: bool = True) -> dict[str, Any]:
    """Run a whole distillation; return its report (also written to ``out/``)."""
    spec = config.validate()
    # resolved first: a misspelt student fails now, not after labelling
    student_folder = resolve_model(spec.model) if spec.model is not None else None
    t_start = time.perf_counter()
    teacher_folder = resolve_model(config.teacher)
    teacher = TorchEncoder(teacher_folder, name=config.teacher)
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

    cache = EmbeddingCache(embeddings_dir(), teacher.model_hash, teacher.dim)
    logger.info("labelling %d texts with the teacher (cached: %d)", len(pool), len(cache))
    teacher_vecs, label_stats = cache.encode(
        teacher, train + held, desc="teacher labels", progress=progress
    )
    student = build_student(spec, teacher.model, student_folder)
    shipped_window = student.max_seq_length
    window = match_window(student, teacher.model, config.max_seq_length)
    sample = train[:_MAP_SAMPLE]
    s0 = student.encode(sample, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    tmap = fit_target_map(teacher_vecs[: len(sample)], s0)
    targets = tmap.apply(teacher_vecs)
    heldout = FidelityEvaluator(held, targets[len(train) :])
    before = heldout(student)
    val = _validation_set(config, val_queries, val_qrels, held, texts.all_queries(), teacher, cache)
    student_cache = None
    if student_folder is not None and spec.layers is None and window == shipped_window:
        # the shipped model's cached vectors; stale for another window or fewer layers
        shipped_hash = model_hash(student_folder)
        student_cache = EmbeddingCache(embeddings_dir(), shipped_hash, int(s0.shape[1]))
    gate: dict[str, Any] = {
        "metric": "ndcg@10",
        "source": val.source,
        "queries": len(val.queries),
        "docs": len(val.corpus),
        "teacher": score(teacher, val, cache),
        "before": score(
            TorchEncoder.from_model(student, "initial", model_hash="x"), val, student_cache
        ),
    }
    initial_state = copy.deepcopy(student.state_dict())

    work = config.out.with_name(f".{config.out.name}.work")
    train_vecs = teacher_vecs[: len(train)]
    rank = None
    if config.loss == "rank":
        docs = set(texts.by_source.get("documents", []))
        query_like = texts.all_queries() | set(texts.by_source.get("sentences", []))
        d_idx = [i for i, t in enumerate(train) if t in docs]
        q_idx = [i for i, t in enumerate(train) if t in query_like]
        rank = mine_rank_examples(
            [train[i] for i in q_idx],
            train_vecs[q_idx],
            [train[i] for i in d_idx],
            train_vecs[d_idx],
            seed=config.seed,
        )
        logger.info("mined %d ranking examples over %d documents", len(rank), len(d_idx))
    dataset, loss = training_objective(
        student,
        config.loss,
        texts=train,
        targets=targets[: len(train)],
        teacher=train_vecs,
        rank=rank,
        temperature=config.temperature,
    )
    info = train_student(
        student,
        dataset,
        loss,
        RetrievalEvaluator(val) if config.loss == "rank" else heldout,
        work,
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        max_minutes=config.max_minutes,
        eval_steps=config.eval_steps,
        seed=config.seed,
    )
    info["train_examples"] = len(dataset)
    if config.loss == "rank" and info["best_score"] is not None:
        gate["after"] = float(info["best_score"])  # checkpoints were chosen by this score
    else:
        gate["after"] = score(TorchEncoder.from_model(student, "trained"), val)
    gate["emitted"] = "trained"
    if gate["after"] < gate["before"]:
        logger.warning(
            "the trained student retrieves worse than the initial one on %s (nDCG@10 %.4f < "
            "%.4f); emitting the initial weights",
            val.source,
            gate["after"],
            gate["before"],
        )
        student.load_state_dict(initial_state)
        gate["emitted"] = "initial"
    after = heldout(student)
    speed_texts = held[:64]
    teacher_spt = _seconds_per_text(lambda t: teacher.encode(t), speed_texts)
    emitted = TorchEncoder.from_model(student, "student")  # batched as the teacher is
    student_spt = _seconds_per_text(lambda t: emitted.encode(t), speed_texts)
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
        "gate": gate,
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
            "temperature": config.temperature,
            "max_seq_length": window,
            "seed": config.seed,
        },
    }
    _publish(student, config.out, report)
    shutil.rmtree(work, ignore_errors=True)
    if config.compress:
        report["compression"] = compress(
            config.out, held[:64], val, min_cosine=config.int8_min_cosine
        )
        served = served_speed(config.out, report["compression"])
        if served is not None:  # same held-out texts as speed_ratio
            backend, docs_per_s = served
            report["served_speed_ratio"] = {
                "backend": backend,
                "ratio": round(docs_per_s * teacher_spt, 2),
            }
        report["wall_seconds"] = round(time.perf_counter() - t_start, 1)
        atomic_write_text(config.out / REPORT, json.dumps(report, indent=2) + "\n")
        atomic_write_text(config.out / "README.md", model_card(report))
    return report


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
