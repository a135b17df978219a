"""`distill --student static`: a static student, model2vec's distillation of the teacher
adapted to the corpus.

1. **Plain**: `model2vec.distill.distill_from_model` over the teacher the run loaded:
   one forward pass per token of the teacher's vocabulary, PCA to ``dims``, Zipf-law
   SIF weighting. It depends on the teacher and those options only, so it is cached
   under ``cache_dir()/static``.
2. **Adapt** (tokenlearn's recipe): the teacher's embeddings of the training texts
   (`distill.run.label`, from the embedding cache), reduced to ``dims`` by PCA and
   rotated onto the plain model's space (`distill.targets.fit_target_map`), are the
   targets of model2vec's trainer (cosine or MSE, no head): the token vectors learn
   what the teacher makes of this corpus. Early stopping on the held-out texts.
3. **Re-weight** by the corpus's own token frequencies, ``a / (a + p(token))``.
4. **Gate**: plain, adapted and re-weighted are scored on the validation queries
   (`distill.run._validation_set`, `distill.gate.score`); the best is emitted.
5. **Fusion**: the dense weight of BM25 + static hybrid search is chosen on the same
   validation queries and recorded in the report.

The output folder is model2vec's format (`search.static_encoder`) with
``distill_report.json`` and a model card.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distill.config import DistillConfig
from distill.gate import ValidationSet, score
from distill.run import REPORT, _validation_set, folder_size_mb, label
from distill.static_options import StaticOptions
from distill.targets import fidelity, fit_target_map
from search.assets import cache_dir, embeddings_dir, model_hash, resolve_model
from search.atomic import atomic_write_json, atomic_write_text, staged_folder
from search.devices import resolve_device
from search.embed_cache import EmbeddingCache
from search.encoder import TorchEncoder
from search.evaluate import bm25_results, corpus_texts, dense_results, score_results
from search.hybrid import Fusion, fuse_results
from search.static_encoder import StaticEncoder

logger = logging.getLogger(__name__)

FUSION_WEIGHTS = tuple(round(0.1 * i, 1) for i in range(1, 10))
_SPEED_TEXTS = 2000


@dataclass
class _Setup:
    """What a static run stands on: its options, the loaded teacher and its cache, the
    labelled training texts (`distill.run.label`) and the validation set."""

    config: DistillConfig
    options: StaticOptions
    device: str
    teacher: TorchEncoder
    cache: EmbeddingCache
    labelled: Any
    val: ValidationSet


@dataclass
class _Trained:
    """The candidate models of a run, in the order they were made, and how each was made."""

    candidates: dict[str, Any]
    stages: list[dict[str, Any]]
    fidelity: dict[str, Any]


def distill_static(config: DistillConfig, *, progress: bool = True) -> dict[str, Any]:
    """Distill, adapt, gate and save a static student; return its report (also written
    to ``config.out``).

    Raises:
        ValueError: ``config.student`` is not a static spec, or another setting is bad.
    """
    options = _static_options(config)
    t_start = time.perf_counter()
    run = _set_up(config, options, progress)
    timings = {"label_seconds": time.perf_counter() - t_start}
    t0 = time.perf_counter()
    plain, plain_cached = plain_model(run.teacher, options, run.device)
    timings["plain_seconds"] = time.perf_counter() - t0
    labelled = run.labelled
    trained = train_candidates(
        plain, labelled.train, labelled.held, labelled.vecs, options, run.device, seed=config.seed
    )
    gate = gate_candidates(trained, run.val, _teacher_score(run.teacher, run.val, run.cache))
    model = trained.candidates[gate["emitted"]]
    report = _report(run, trained, gate, model, plain_cached, timings)
    report["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    publish(model, config.out, report)
    return report


def _static_options(config: DistillConfig) -> StaticOptions:
    """The static options of `config`'s student spec, after validating the config."""
    spec = config.validate()
    if spec.static is None:
        raise ValueError(f"--student {config.student!r} is not a static student spec")
    return spec.static


def _set_up(config: DistillConfig, options: StaticOptions, progress: bool) -> _Setup:
    """Load the teacher, label the training texts with it and build the validation set."""
    device = resolve_device(config.device)
    teacher = TorchEncoder(resolve_model(config.teacher), name=config.teacher, device=device)
    cache = EmbeddingCache(embeddings_dir(), teacher.model_hash, teacher.dim)
    labelled = label(config, teacher, cache, progress)
    val = _validation_set(
        config,
        labelled.val_queries,
        labelled.val_qrels,
        labelled.held,
        labelled.texts.all_queries(),
        teacher,
        cache,
    )
    return _Setup(config, options, device, teacher, cache, labelled, val)


def train_candidates(
    plain: Any,
    train: list[str],
    held: list[str],
    vecs: np.ndarray,
    options: StaticOptions,
    device: str = "cpu",
    *,
    seed: int = 42,
) -> _Trained:
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

    Returns:
        The candidates by name (``plain``, ``adapted``, ``adapted+reweight``), the stages
        that made them with their seconds, and the held-out fidelity of adaptation.
    """
    candidates = {"plain": plain}
    stages: list[dict[str, Any]] = []
    fid: dict[str, Any] = {}
    if options.adapt:
        t0 = time.perf_counter()
        tmap = fit_target_map(vecs[: min(len(train), 2000)], _encode(plain, train[:2000]))
        targets = tmap.apply(vecs)
        train_targets, held_targets = targets[: len(train)], targets[len(train) :]
        adapted = adapt(plain, train, train_targets, held, held_targets, options, device, seed=seed)
        fid = {
            "target_map_explained": round(tmap.explained, 4),
            "heldout_cosine_plain": _fidelity(plain, held, held_targets),
            "heldout_cosine_adapted": _fidelity(adapted, held, held_targets),
        }
        candidates["adapted"] = adapted
        stages.append({"name": "adapt", "seconds": round(time.perf_counter() - t0, 1)})
        if options.reweight > 0:
            t0 = time.perf_counter()
            candidates["adapted+reweight"] = reweight(adapted, train + held, options.reweight)
            stages.append({"name": "reweight", "seconds": round(time.perf_counter() - t0, 1)})
    candidates = {name: with_dtype(m, options.dtype) for name, m in candidates.items()}
    return _Trained(candidates, stages, fid)


def gate_candidates(
    trained: _Trained, val: ValidationSet, teacher_score: float | None
) -> dict[str, Any]:
    """Score each candidate on the validation set and pick the one to emit; each stage
    of `trained` gets the scores before and after it (updated in place).

    Returns:
        The report's ``gate`` block: scores, the emitted candidate's name and its gain
        over the plain model.
    """
    scores = {
        name: score(StaticEncoder.from_model(m, name), val)
        for name, m in trained.candidates.items()
    }
    for stage, (before, after) in zip(trained.stages, _stage_pairs(scores), strict=False):
        stage.update(before=before, after=after, kept=after > before)
    emitted = max(scores, key=lambda name: scores[name])  # ties: the earlier, simpler one
    return {
        "metric": "ndcg@10",
        "source": val.source,
        "queries": len(val.queries),
        "docs": len(val.corpus),
        "teacher": teacher_score,
        "before": scores["plain"],
        "after": scores[emitted],
        "candidates": scores,
        "emitted": emitted,
        "why": f"highest validation nDCG@10 of {', '.join(scores)}",
        "gain": round(scores[emitted] - scores["plain"], 4),
    }


def _report(
    run: _Setup,
    trained: _Trained,
    gate: dict[str, Any],
    model: Any,
    plain_cached: bool,
    timings: dict[str, float],
) -> dict[str, Any]:
    """The run's report, with the emitted model's fusion weight and speed measured now
    (``wall_seconds`` is left to the caller)."""
    config, labelled, teacher = run.config, run.labelled, run.teacher
    train, held = labelled.train, labelled.held
    encoder = StaticEncoder.from_model(model, "static")
    return {
        "out": str(config.out),
        "kind": "static",
        "teacher": config.teacher,
        "teacher_hash": teacher.model_hash,
        "student": config.student,
        "data": str(config.data),
        "device": run.device,
        "static": run.options.as_dict(),
        "texts": {
            "by_source": labelled.texts.counts(),
            "total": len(train) + len(held),
            "heldout": len(held),
            "teacher_labelled_now": labelled.stats.encoded,
        },
        "plain_cached": plain_cached,
        "fidelity": trained.fidelity,
        "stages": trained.stages,
        "train_seconds": round(sum(s["seconds"] for s in trained.stages), 1),
        "gate": gate,
        "hybrid": choose_fusion(encoder, run.val),
        "speed": _speed(encoder, train + held, labelled.stats.docs_per_s, run.val),
        "dim": model.dim,
        "vocabulary": len(model.tokens),
        "size_mb": {"teacher": round(folder_size_mb(teacher.folder), 1)} if teacher.folder else {},
        "timings": {k: round(v, 1) for k, v in timings.items()},
    }


def _stage_pairs(scores: dict[str, float]) -> list[tuple[float, float]]:
    """(before, after) validation nDCG@10 of each stage, in the order stages ran."""
    return list(itertools.pairwise(scores.values()))


def plain_cache_folder(teacher_hash: str, options: StaticOptions) -> Path:
    """Where the plain distillation of a teacher with these options is cached."""
    import model2vec

    key = json.dumps(
        [teacher_hash, options.dims, options.sif, model2vec.__version__], sort_keys=True
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir() / "static" / f"{teacher_hash}-{digest}"


def plain_model(teacher: TorchEncoder, options: StaticOptions, device: str) -> tuple[Any, bool]:
    """model2vec's distillation of `teacher` (float32 vectors), from the cache when
    there; returns (StaticModel, whether it came from the cache)."""
    from model2vec import StaticModel

    folder = plain_cache_folder(teacher.model_hash, options)
    if (folder / "model.safetensors").is_file():
        return _windowed(StaticModel.from_pretrained(folder, force_download=False), options), True
    model = distil(teacher.model, options, device)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with staged_folder(folder) as tmp:
        model.save_pretrained(tmp)
    return _windowed(model, options), False


def distil(st_model: Any, options: StaticOptions, device: str = "cpu") -> Any:
    """model2vec's distillation of a loaded sentence-transformers model.

    Token vectors are the teacher's mean-pooled output for each token of its own
    tokenizer's vocabulary (``[unused]`` tokens dropped), reduced by PCA to
    ``options.dims`` (no reduction when the teacher is narrower) and weighted by
    model2vec's Zipf-law SIF weights (``options.sif``; 0: none). float32.

    Args:
        st_model: A `SentenceTransformer` whose first module is a transformer.
        options: The static options.
        device: Torch device of the forward passes.
    """
    from model2vec.distill import distill_from_model

    transformer = st_model[0]
    backbone = getattr(transformer, "auto_model", None)
    if backbone is None:
        raise ValueError(
            f"the teacher's first module is {type(transformer).__name__}, not a transformer; "
            "distil a static student from a transformer sentence-transformers model"
        )
    width = int(backbone.config.hidden_size)
    return distill_from_model(
        model=backbone,
        tokenizer=st_model.tokenizer,
        device=device,
        pca_dims=min(options.dims, width),
        sif_coefficient=options.sif or None,
        quantize_to="float32",
    )


def _windowed(model: Any, options: StaticOptions) -> Any:
    return _rebuild(model, np.asarray(model.embedding, dtype=np.float32), options.max_tokens)


def _rebuild(model: Any, vectors: np.ndarray, max_length: int | None) -> Any:
    """A new `StaticModel` with `model`'s tokenizer and config and these vectors."""
    from model2vec import StaticModel

    config = {k: v for k, v in model.config.items() if k not in ("max_length", "normalize")}
    return StaticModel(
        vectors=vectors,
        tokenizer=model.tokenizer,
        config=config,
        normalize=True,
        base_model_name=model.base_model_name,
        language=model.language,
        max_length=max_length,
    )


def _encode(model: Any, texts: list[str]) -> np.ndarray:
    return StaticEncoder.from_model(model, "static").encode(texts)


def _fidelity(model: Any, texts: list[str], targets: np.ndarray) -> float:
    return round(fidelity(_encode(model, texts), targets)["cosine"], 4)


def adapt(
    plain: Any,
    texts: list[str],
    targets: np.ndarray,
    held: list[str],
    held_targets: np.ndarray,
    options: StaticOptions,
    device: str = "cpu",
    *,
    seed: int = 42,
) -> Any:
    """Train the token vectors of `plain` so each text's mean vector matches its target.

    Args:
        plain: The StaticModel to start from (not modified).
        texts: Training texts.
        targets: float32 (len(texts), plain.dim), unit rows: the teacher's embeddings in
            the plain model's space.
        held: Held-out texts for early stopping; held_targets their targets.
        options: ``loss`` (cosine: `StaticModelForSimilarity`, mse:
            `StaticModelForRegression`), ``lr``, ``batch``, ``epochs``, ``patience``.

    Returns:
        A new StaticModel with the trained vectors (float32), normalising its output.
    """
    import torch
    from model2vec.train import StaticModelForRegression, StaticModelForSimilarity

    if targets.shape != (len(texts), plain.dim):
        raise ValueError(f"targets {targets.shape} != ({len(texts)}, {plain.dim})")
    kind = StaticModelForSimilarity if options.loss == "cosine" else StaticModelForRegression
    trainer = kind.from_static_model(
        model=plain, n_layers=0, out_dim=plain.dim, max_length=options.max_tokens
    )
    trainer.fit(
        texts,
        torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32)),
        X_val=held,
        y_val=torch.from_numpy(np.ascontiguousarray(held_targets, dtype=np.float32)),
        learning_rate=options.lr,
        batch_size=options.batch,
        max_epochs=options.epochs,
        early_stopping_patience=options.patience,
        device=device,
        random_seed=seed,
    )
    trained = trainer.to_static_model()
    return _rebuild(plain, np.asarray(trained.embedding, dtype=np.float32), options.max_tokens)


def token_frequencies(model: Any, texts: list[str]) -> np.ndarray:
    """Smoothed probability of each token id in `texts`: (count + 1) / (total + vocab).

    Returns:
        float64 array of shape (len(model.tokens),).
    """
    ids = model.tokenize(texts)
    flat = np.fromiter((i for row in ids for i in row), dtype=np.int64)
    counts = np.bincount(flat, minlength=len(model.tokens)).astype(np.float64)
    return (counts + 1) / (counts.sum() + len(counts))


def reweight(model: Any, texts: list[str], alpha: float) -> Any:
    """`model` with each token vector scaled by ``alpha / (alpha + p(token))``, p its
    frequency in `texts` (tokenlearn's re-weighting by the corpus's own frequencies).

    Returns:
        A new StaticModel; `model` is not modified.
    """
    if model.token_mapping is not None:
        raise ValueError("re-weighting a vocabulary-quantized static model is not supported")
    weights = alpha / (alpha + token_frequencies(model, texts))
    vectors = np.asarray(model.embedding, dtype=np.float32) * weights[:, None].astype(np.float32)
    return _rebuild(model, vectors, model.max_length)


def with_dtype(model: Any, dtype: str) -> Any:
    """`model` with its vectors stored as `dtype` (``float16`` or ``float32``)."""
    from model2vec.quantization import DType, quantize_embeddings

    if np.dtype(model.embedding.dtype).name == dtype:
        return model
    return _rebuild(model, quantize_embeddings(model.embedding, DType(dtype)), model.max_length)


def choose_fusion(encoder: StaticEncoder, val: ValidationSet) -> dict[str, Any]:
    """The convex fusion weight of dense + BM25 (`search.hybrid`) with the best
    nDCG@10 on the validation set, with that of each side alone.

    Returns:
        ``{"method", "weight", "ndcg@10", "dense", "bm25", "grid"}``.
    """
    dense, _ = dense_results(encoder, val.corpus, val.queries, progress=False)
    sparse, _ = bm25_results(val.corpus, val.queries)
    grid = {}
    for weight in FUSION_WEIGHTS:
        fused = fuse_results(dense, sparse, method=Fusion.CONVEX, weight=weight)
        grid[weight] = round(score_results(val.qrels, fused)["ndcg@10"], 4)
    best = max(grid, key=lambda w: (grid[w], -abs(w - 0.5)))  # ties: nearer the middle
    return {
        "method": Fusion.CONVEX.value,
        "weight": best,
        "ndcg@10": grid[best],
        "dense": round(score_results(val.qrels, dense)["ndcg@10"], 4),
        "bm25": round(score_results(val.qrels, sparse)["ndcg@10"], 4),
        "grid": {str(w): s for w, s in grid.items()},
        "chosen_on": f"{val.source}, {len(val.queries)} queries x {len(val.corpus)} docs",
    }


def _teacher_score(
    teacher: TorchEncoder, val: ValidationSet, cache: EmbeddingCache
) -> float | None:
    """The teacher's validation nDCG@10 when its embeddings are all cached, else None
    (a static run does not spend minutes of teacher time on a reference number)."""
    _, texts = corpus_texts(val.corpus)
    _, missing = cache.lookup(texts + list(val.queries.values()))
    return None if missing else score(teacher, val, cache)


def _speed(
    encoder: StaticEncoder, texts: list[str], teacher_docs_per_s: float, val: ValidationSet
) -> dict[str, float]:
    """Texts/s of the static model on the training texts and ms a validation query,
    against the teacher's texts/s on the same texts as the embedding cache recorded."""
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
    out = {"docs_per_s": round(docs_per_s, 1), "query_ms": round(query_ms, 4)}
    if np.isfinite(teacher_docs_per_s):
        out["teacher_docs_per_s"] = round(teacher_docs_per_s, 2)
        out["ratio"] = round(docs_per_s / teacher_docs_per_s, 1)
    return out


def publish(model: Any, out: Path, report: dict[str, Any]) -> None:
    """Save the static model with its report and model card, swapped in whole."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with staged_folder(out) as tmp:
        model.save_pretrained(tmp)
        report["student_hash"] = model_hash(tmp)
        report["size_mb"]["student"] = round(folder_size_mb(tmp), 1)
        atomic_write_json(tmp / REPORT, report)
        atomic_write_text(tmp / "README.md", model_card(report))


def model_card(report: dict[str, Any]) -> str:
    """A model card (README.md) for a static student folder, from its report."""
    gate, hybrid, speed, opts = report["gate"], report["hybrid"], report["speed"], report["static"]
    scores = ", ".join(f"{k} {v:.4f}" for k, v in gate["candidates"].items())
    teacher = f", teacher {gate['teacher']:.4f}" if gate.get("teacher") is not None else ""
    rows = [
        ("teacher", f"{report['teacher']} ({report['teacher_hash']})"),
        ("vectors", f"{report['vocabulary']:,} tokens x {report['dim']} ({opts['dtype']})"),
        ("options", ", ".join(f"{k}={v}" for k, v in opts.items())),
        ("training texts", f"{report['texts']['total']} ({report['texts']['heldout']} held out)"),
        ("validation nDCG@10", f"{scores}{teacher}; emitted {gate['emitted']}"),
        (
            "hybrid with BM25",
            f"convex, dense weight {hybrid['weight']}: nDCG@10 {hybrid['ndcg@10']:.4f} "
            f"(dense {hybrid['dense']:.4f}, BM25 {hybrid['bm25']:.4f}; {hybrid['chosen_on']})",
        ),
        ("texts/s", f"{speed['docs_per_s']:,.0f} (x{speed.get('ratio', 0):.0f} the teacher)"),
        ("ms a query", f"{speed['query_ms']:.3f}"),
    ]
    lines = [
        "---",  # model card metadata, read by model2vec when it loads the folder
        "library_name: model2vec",
        f"base_model: {report['teacher']}",
        "tags: [static-embeddings, distilsearch]",
        "---",
        "",
        f"# Static student of {report['teacher']}",
        "",
        "Made by `distilsearch distill --student static` (model2vec distillation, adapted "
        "to the corpus on the teacher's embeddings). Load it with "
        "`search.encoder.load_encoder` or `model2vec.StaticModel.from_pretrained`.",
        "",
        "| | |",
        "| --- | --- |",
        *(f"| {k} | {v} |" for k, v in rows),
        "",
        f"Serve hybrid search with `DISTILSEARCH_HYBRID_WEIGHT={hybrid['weight']}`.",
        "",
        "```json",
        json.dumps(report["gate"], indent=2),
        "```",
        "",
    ]
    return "\n".join(lines)
