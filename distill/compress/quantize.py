"""Int8 quantization of an exported ONNX encoder, behind a quality gate.

`quantize_int8` makes ``onnx/model_int8.onnx`` from ``onnx/model.onnx`` in five stages:

1. **collect activations** (`distill.compress.gptq.activation_stats`): the fp32 graph runs on
   the first check texts; for each MatMul with a weight, the range of its inputs over
   their RMS and their Gram matrix XᵀX are recorded;
2. **GPTQ-round weights** (`distill.compress.gptq.round_weights`): each weight is rounded to
   7-bit integers per output channel, compensating each rounding error on the inputs
   not yet rounded;
3. **rewrite the graph** (`distill.compress.int8_graph`): embedding tables (``Gather``) are
   stored in int8 (weight-only: size, not speed), and each weight MatMul runs as
   ``MatMulIntegerToFloat`` on int8 activations whose scales are computed at run time,
   one per token;
4. **gate trials**: the MatMuls with the most outlying inputs are kept in fp32 — 0, 1,
   2, 4, 8… of them, then bisected — until the mean cosine between int8 and fp32
   embeddings reaches `QualityGate.min_cosine`; with an evaluation, retrieval quality
   must also stay within `QualityGate.max_relative_drop` of the fp32 ONNX model;
5. **write**: a passing model replaces the previous ``model_int8.onnx``; a failing one
   is not written, and a previous one is deleted (it would no longer match the gate's
   verdict).

Why this scheme rather than onnxruntime's ``quantize_dynamic`` (one activation scale
per tensor, full-range weights), which breaks some encoders (all-mpnet-base-v2):

- **7-bit weights.** Without AVX-512 VNNI, onnxruntime's fast u8×s8 kernels add pairs
  of products in int16, which overflows for full-range 8-bit weights (common with
  per-channel scales); 7-bit weights cannot overflow on any x86 CPU. The kernels that
  do not overflow (u8×u8, s8×s8) are slower.
- **Per-token activation scales.** Some MatMul inputs (FFN down-projections) hold a
  few huge values in a few tokens; one scale per tensor is set by them and loses the
  rest, one scale per token confines the loss to those tokens.
- **GPTQ rounding.** What error is left is mostly weight rounding, which GPTQ reduces
  for the inputs the MatMul really sees.

The measurements behind these choices are in docs/compression.md.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distill.compress.export import (
    CompressionError,
    check_texts,
    cosines,
    files_mb,
    onnx_files,
    timed_encode,
    update_manifest,
)
from distill.compress.gptq import PROBE_TEXTS, Rounded, activation_stats, round_weights
from distill.compress.int8_graph import quantize_tables, write_int8
from search.encoder import Encoder
from search.onnx_encoder import FP32_FILE, INT8_FILE, ONNX_DIR, OnnxEncoder
from search.types import Corpus, Qrels, Queries

logger = logging.getLogger(__name__)

__all__ = ["QualityGate", "gate_decision", "quantize_int8", "retrieval_metric"]

Evaluation = Callable[[Encoder], float]
_OP_TYPES = ("MatMul", "Gather")  # Gather: embedding tables, weight-only
_MIN_COSINE_TEXTS = 16  # held-out texts needed to measure the cosine on them alone


@dataclass(frozen=True)
class QualityGate:
    """When an int8 model may be written beside the fp32 one.

    Attributes:
        min_cosine: Least mean cosine between int8 and fp32 embeddings of the check
            texts. It is set high because the retrieval check runs on a small slice
            that cannot see drops a full corpus shows (docs/compression.md, "The gate").
        max_relative_drop: Largest relative drop of the retrieval metric allowed
            (0.01: int8 nDCG@10 >= 0.99 × fp32 nDCG@10).
        evaluate: Scores an encoder (higher is better), e.g. `retrieval_metric` on a
            BEIR slice; None checks cosine only.
        metric: Name of what `evaluate` returns, for the report.
    """

    min_cosine: float = 0.996
    max_relative_drop: float = 0.01
    evaluate: Evaluation | None = None
    metric: str = "ndcg@10"


def gate_decision(
    gate: QualityGate,
    cosine_mean: float,
    fp32_score: float | None = None,
    int8_score: float | None = None,
) -> tuple[bool, str]:
    """Whether int8 passes `gate`, and why, from measured numbers.

    Args:
        gate: The thresholds.
        cosine_mean: Mean cosine between int8 and fp32 embeddings.
        fp32_score: The fp32 model's metric (None when not evaluated).
        int8_score: The int8 model's metric (None when not evaluated).

    Returns:
        (passed, a sentence with the numbers).
    """
    if cosine_mean < gate.min_cosine:
        return False, f"cosine to fp32 {cosine_mean:.4f} < {gate.min_cosine}"
    if fp32_score is None or int8_score is None:
        return True, f"cosine to fp32 {cosine_mean:.4f} >= {gate.min_cosine} (no retrieval check)"
    drop = (fp32_score - int8_score) / fp32_score if fp32_score > 0 else 0.0
    facts = (
        f"{gate.metric} {int8_score:.4f} vs fp32 {fp32_score:.4f} "
        f"(relative drop {100 * drop:.2f} %, allowed {100 * gate.max_relative_drop:.2f} %)"
    )
    if drop > gate.max_relative_drop:
        return False, facts
    return True, f"{facts}; cosine to fp32 {cosine_mean:.4f}"


def retrieval_metric(
    corpus: Corpus,
    queries: Queries,
    qrels: Qrels,
    metric: str = "ndcg@10",
    cache_root: Path | None = None,
) -> Evaluation:
    """An evaluation for `QualityGate`: `metric` of exact dense search on a BEIR split.

    With `cache_root`, vectors go through each encoder's embedding cache
    (`search.embed_cache.cache_for`), keyed by the artifact's content hash, so an int8
    trial never reads the fp32 model's vectors and a later evaluation of the same
    artifact on the same documents does not encode them again.
    """
    from search.embed_cache import cache_for
    from search.evaluate import evaluate

    def score(encoder: Encoder) -> float:
        cache = cache_for(encoder, cache_root) if cache_root is not None else None
        report = evaluate(encoder, corpus, queries, qrels, cache=cache, progress=False)
        return float(report[metric])

    return score


@dataclass
class Trial:
    keep: int  # how many of the worst MatMuls stay fp32
    path: Path
    docs_per_s: float
    cosine_mean: float
    cosine_min: float
    size_mb: float

    def row(self) -> dict[str, Any]:
        return {
            "fp32_nodes": self.keep,
            "cosine_mean": round(self.cosine_mean, 5),
            "cosine_min": round(self.cosine_min, 5),
            "size_mb": round(self.size_mb, 1),
        }


def fewest_fp32(
    try_keep: Callable[[int], Trial], n: int, min_cosine: float, max_trials: int
) -> list[Trial]:
    """Find the fewest fp32 MatMuls that reach `min_cosine`: 0, 1, 2, 4, 8… then bisect.

    Returns:
        Every trial made, in order; the passing one with the smallest ``keep`` is the
        answer (none passes when the cosine is never reached within `max_trials`).
    """
    trials: list[Trial] = []
    passes = lambda t: t.cosine_mean >= min_cosine  # noqa: E731
    failed, keep = -1, 0
    while len(trials) < max_trials:
        trials.append(try_keep(keep))
        if passes(trials[-1]):
            break
        if keep >= n:
            return trials
        failed, keep = keep, min(n, max(1, 2 * keep))
    else:
        return trials
    best = keep
    while best - failed > 1 and len(trials) < max_trials:
        mid = (best + failed) // 2
        trials.append(try_keep(mid))
        best, failed = (mid, failed) if passes(trials[-1]) else (best, mid)
    return trials


def quantize_int8(
    folder: Path,
    texts: Sequence[str],
    gate: QualityGate | None = None,
    *,
    max_trials: int = 8,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Quantize ``<folder>/onnx/model.onnx`` to ``model_int8.onnx`` if it passes `gate`.

    MatMul weights are GPTQ-rounded to 7 bits per output channel and their inputs
    quantized per token at run time; embedding tables are stored in int8. The MatMuls
    with the most outlying input activations are kept in fp32, as few as the cosine
    gate allows (see the module doc).

    Args:
        folder: A model folder holding an fp32 export (`distill.compress.export.export_onnx`).
        texts: Check texts (real documents and queries; a few dozen suffice). The
            first 32 calibrate GPTQ and rank MatMuls by activation outliers; the
            cosine to fp32 is measured on the rest when there are at least 16 more.
        gate: Quality thresholds and the optional retrieval evaluation.
        max_trials: Most quantizations to try.
        batch_size: Batch size when encoding the check texts.

    Returns:
        Report: ``written`` (bool), ``reason``, ``cosine_mean``/``cosine_min`` to fp32,
        ``fp32_nodes`` (MatMuls kept fp32, worst first), ``trials``,
        ``size_mb``/``fp32_size_mb``, ``fp32_docs_per_s``/``int8_docs_per_s``,
        ``speedup`` and, with an evaluation, ``fp32_score``/``int8_score``/
        ``relative_drop`` of ``metric``.

    Raises:
        CompressionError: there is no fp32 export to quantize.
    """
    checked = check_texts(texts, "quantize_int8")
    gate = gate or QualityGate()
    src = folder / ONNX_DIR / FP32_FILE
    if not src.is_file():
        raise CompressionError(
            f"{src} not found; export first with distill.compress.export.export_onnx(folder, texts)"
        )
    fp32 = OnnxEncoder(folder, name=folder.name)
    ref, fp32_speed = timed_encode(lambda t: fp32.encode(t, batch_size=batch_size), checked)
    calibration = calibrate(src, fp32, checked)
    tmp = folder / ONNX_DIR / f".int8-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    trials = _Trials(folder, tmp, calibration, checked, ref, batch_size)
    report = _setup_report(folder, gate, calibration, trials, fp32_speed)
    try:
        trials.quantize_tables(src)
        made = fewest_fp32(trials.run, len(calibration.ranked), gate.min_cosine, max_trials)
        best = _best(made, gate.min_cosine)
        report.update(_trials_report(made, best, calibration, fp32_speed))
        report.update(judge(gate, best, fp32, folder))
        _write(folder, best, report["written"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _record(folder, report)
    return report


@dataclass(frozen=True)
class Calibration:
    """What the check texts tell about the fp32 graph's weight MatMuls.

    Attributes:
        ranked: Weight MatMul names, most outlying inputs first (the first kept fp32).
        ranges: {MatMul: (max − min) / RMS of its inputs}.
        rounded: {MatMul: GPTQ-rounded int8 weight and per-column scales}.
    """

    ranked: list[str]
    ranges: dict[str, float]
    rounded: Rounded


def calibrate(src: Path, fp32: OnnxEncoder, texts: Sequence[str]) -> Calibration:
    """Stages 1 and 2: collect each weight MatMul's inputs on the first `PROBE_TEXTS`
    texts, rank the MatMuls by outliers and GPTQ-round their weights.

    The Gram matrices (about 0.1 GB for MiniLM, 1 GB for MPNet) are dropped on return.
    """
    stats = activation_stats(src, fp32, texts)
    ranges = {node: float(s.range_ratio) for node, s in stats.items()}
    ranked = sorted(ranges, key=lambda node: -ranges[node])
    return Calibration(ranked, ranges, round_weights(src, stats))


class _Trials:
    """Stage 3 and the trials of stage 4: int8 graphs with some MatMuls kept in fp32,
    written under `work` and measured against the fp32 embeddings `ref`.

    GPTQ fits the weights to the first `PROBE_TEXTS` texts, so the cosine is measured
    on the others when there are enough of them, else on all.
    """

    def __init__(
        self,
        folder: Path,
        work: Path,
        calibration: Calibration,
        texts: list[str],
        ref: np.ndarray,
        batch_size: int,
    ) -> None:
        self.folder, self.work, self.calibration = folder, work, calibration
        self.texts, self.ref, self.batch_size = texts, ref, batch_size
        enough = len(texts) >= PROBE_TEXTS + _MIN_COSINE_TEXTS
        self.held = slice(PROBE_TEXTS, None) if enough else slice(None)
        self.tables = work / "tables" / INT8_FILE  # the same for every trial

    def quantize_tables(self, src: Path) -> None:
        """Store the embedding tables of `src` in int8, once for all trials."""
        self.tables.parent.mkdir(parents=True)
        quantize_tables(src, self.tables)

    def run(self, keep: int) -> Trial:
        """Write and measure the int8 graph with the `keep` most outlying MatMuls in fp32."""
        path = self.work / str(keep) / INT8_FILE
        path.parent.mkdir(parents=True)
        write_int8(self.tables, path, self.calibration.ranked[:keep], self.calibration.rounded)
        int8 = OnnxEncoder(self.folder, name=self.folder.name, quantized=True, model_file=path)
        vecs, speed = timed_encode(lambda t: int8.encode(t, batch_size=self.batch_size), self.texts)
        cos = cosines(vecs[self.held], self.ref[self.held])
        size = files_mb(list(path.parent.iterdir()))
        logger.info("int8 with %d MatMuls in fp32: cosine %.4f", keep, cos.mean())
        # The encoder is not kept: each holds two onnxruntime sessions whose memory
        # arenas grow to a batch's activations, and trials would add them up.
        return Trial(keep, path, speed, float(cos.mean()), float(cos.min()), size)


def _setup_report(
    folder: Path,
    gate: QualityGate,
    calibration: Calibration,
    trials: _Trials,
    fp32_speed: float,
) -> dict[str, Any]:
    """The report's entries known before any trial: settings, texts, the fp32 model."""
    return {
        "path": str(folder / ONNX_DIR / INT8_FILE),
        "settings": {
            "op_types": list(_OP_TYPES),
            "activations": "per token, symmetric 8-bit",
            "weights": "per output channel, 7-bit, GPTQ-rounded",
        },
        "num_texts": len(trials.texts),
        "calibration_texts": min(len(trials.texts), PROBE_TEXTS),
        "cosine_texts": len(trials.ref[trials.held]),
        "weight_matmuls": len(calibration.ranked),
        "fp32_size_mb": round(files_mb(onnx_files(folder, FP32_FILE)), 1),
        "fp32_docs_per_s": round(fp32_speed, 1),
        "min_cosine": gate.min_cosine,
    }


def _best(trials: list[Trial], min_cosine: float) -> Trial:
    """The passing trial with fewest fp32 MatMuls, else the one with the best cosine."""
    good = [t for t in trials if t.cosine_mean >= min_cosine]
    return min(good, key=lambda t: t.keep) if good else max(trials, key=lambda t: t.cosine_mean)


def _trials_report(
    trials: list[Trial], best: Trial, calibration: Calibration, fp32_speed: float
) -> dict[str, Any]:
    """The report's entries on the trials made and the best one."""
    kept = calibration.ranked[: best.keep]
    return {
        "trials": [t.row() for t in trials],
        "cosine_mean": round(best.cosine_mean, 5),
        "cosine_min": round(best.cosine_min, 5),
        "size_mb": round(best.size_mb, 1),
        "int8_docs_per_s": round(best.docs_per_s, 1),
        "speedup": round(best.docs_per_s / fp32_speed, 2),
        "fp32_nodes": kept,
        "fp32_node_ranges": {n: round(calibration.ranges[n], 1) for n in kept},
    }


def judge(gate: QualityGate, best: Trial, fp32: OnnxEncoder, folder: Path) -> dict[str, Any]:
    """Stage 4's verdict on the best trial: the retrieval check (when the cosine passes
    and `gate` has an evaluation), then `gate_decision`.

    Returns:
        Report entries: ``reason``, ``written`` and, after a retrieval check,
        ``metric``, ``fp32_score``, ``int8_score`` and ``relative_drop``.
    """
    entries: dict[str, Any] = {}
    fp32_score = int8_score = None
    if best.cosine_mean >= gate.min_cosine and gate.evaluate is not None:
        int8 = OnnxEncoder(folder, name=folder.name, quantized=True, model_file=best.path)
        fp32_score, int8_score = gate.evaluate(fp32), gate.evaluate(int8)
        entries.update(
            metric=gate.metric,
            fp32_score=round(fp32_score, 5),
            int8_score=round(int8_score, 5),
            relative_drop=round((fp32_score - int8_score) / max(fp32_score, 1e-12), 5),
        )
    passed, entries["reason"] = gate_decision(gate, best.cosine_mean, fp32_score, int8_score)
    entries["written"] = passed
    return entries


def _write(folder: Path, best: Trial, passed: bool) -> None:
    """Stage 5: delete the previous int8 model; move the best trial's in if it passed.

    The external data file moves first and the graph last, so the graph never points
    at data that is not there yet.
    """
    for old in onnx_files(folder, INT8_FILE):
        old.unlink(missing_ok=True)
    if passed:
        for path in sorted(best.path.parent.iterdir(), key=lambda p: p.suffix == ".onnx"):
            os.replace(path, folder / ONNX_DIR / path.name)


def _record(folder: Path, report: dict[str, Any]) -> None:
    """Put the verdict into ``onnx/manifest.json`` and log it."""
    keys = ("written", "reason", "cosine_mean", "size_mb", "speedup")
    update_manifest(folder, **{INT8_FILE: {k: report.get(k) for k in keys}})
    if report["written"]:
        logger.info("wrote %s: %s", report["path"], report["reason"])
    else:
        logger.warning("int8 model refused, not written: %s", report["reason"])
