"""Int8 dynamic quantization of an exported ONNX encoder, behind a quality gate.

Plain dynamic quantization breaks some encoders: on all-mpnet-base-v2 the cosine
between int8 and fp32 embeddings falls to 0.4–0.6. Two causes, two fixes:

- **Weight saturation.** Without AVX-512 VNNI, onnxruntime's u8×s8 kernels add pairs
  of products in int16, which overflows for full-range 8-bit weights (per-channel
  scales make that common: cosine ~0). Weights are therefore always quantized to
  7 bits (``reduce_range``), which cannot overflow on any x86 CPU, and per output
  channel, which wins back the precision.
- **Activation outliers.** Activations are quantized per tensor at run time, so a
  MatMul whose input has a few huge values (the FFN down-projections of middle
  layers in MPNet: range 150–290× their RMS) loses everything else. Each weight
  MatMul's input range/RMS is measured on the check texts, and the worst are kept
  in fp32 — 0, 1, 2, 4, 8… of them — until the int8 output agrees with fp32.

The result is then judged by a `QualityGate`: mean cosine to fp32 and, when an
evaluation is given, retrieval quality (nDCG@10 on a BEIR slice) within 1 % of the
fp32 ONNX model. A model that fails is not written, and a previous
``model_int8.onnx`` is deleted (it would no longer match the gate's verdict).
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

from distill.export import (
    CompressionError,
    check_texts,
    cosines,
    files_mb,
    onnx_files,
    timed_encode,
    update_manifest,
)
from search.encoder import Encoder
from search.onnx_encoder import FP32_FILE, INT8_FILE, ONNX_DIR, OnnxEncoder
from search.types import Corpus, Qrels, Queries

logger = logging.getLogger(__name__)

__all__ = ["QualityGate", "gate_decision", "quantize_int8", "retrieval_metric"]

Evaluation = Callable[[Encoder], float]
_OP_TYPES = ("MatMul", "Gather")  # Gather: embedding tables, weight-only
_PROBE_BATCH = 8
_PROBE_TEXTS = 32


@dataclass(frozen=True)
class QualityGate:
    """When an int8 model may be written beside the fp32 one.

    Attributes:
        min_cosine: Least mean cosine between int8 and fp32 embeddings of the check texts.
            0.996, not 0.99: the default student's int8 model at cosine 0.993 (no MatMul
            in fp32) lost 1 % nDCG@10 on 300 held-out SciFact train queries over the
            full corpus (0.6597 vs 0.6661) where the retrieval gate's 1,000-document
            slice saw 0.1 %; at 0.996 (4–5 of its most outlying MatMuls in fp32) it
            lost nothing there (0.6691) and 0.15 % of fp32 on test, for 20–25 % of its
            speed (SciFact passages: 18.2 vs 24.2 docs/s).
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
    corpus: Corpus, queries: Queries, qrels: Qrels, metric: str = "ndcg@10"
) -> Evaluation:
    """An evaluation for `QualityGate`: `metric` of exact dense search on a BEIR split.

    Embeddings are not cached: fp32 and int8 share a model hash, so a cache would
    hand the int8 model the fp32 vectors.
    """
    from search.evaluate import evaluate

    def score(encoder: Encoder) -> float:
        return float(evaluate(encoder, corpus, queries, qrels, cache=None, progress=False)[metric])

    return score


def weight_matmuls(model_path: Path) -> list[tuple[str, str]]:
    """(node name, activation input name) of each MatMul whose second input is a weight."""
    import onnx

    proto = onnx.load(str(model_path), load_external_data=False)
    weights = {init.name for init in proto.graph.initializer}
    return [
        (node.name, node.input[0])
        for node in proto.graph.node
        if node.op_type == "MatMul" and node.input[1] in weights
    ]


def activation_ranges(
    model_path: Path, encoder: OnnxEncoder, texts: Sequence[str]
) -> dict[str, float]:
    """How hard each weight MatMul's input is to quantize per tensor: (max − min) / RMS.

    Measured over real (unpadded) tokens of `texts` with onnxruntime. Larger values
    mean a few outliers set the int8 scale and the other values lose precision.

    Returns:
        {MatMul node name: range / RMS of its activation input}.
    """
    import onnx
    import onnxruntime as ort

    nodes = weight_matmuls(model_path)
    tensors = list(dict.fromkeys(t for _, t in nodes))
    proto = onnx.load(str(model_path))
    for name in tensors:
        proto.graph.output.append(
            onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        )
    probe_dir = model_path.parent / f".probe-{os.getpid()}"
    probe_dir.mkdir(exist_ok=True)
    try:
        probe = probe_dir / "probe.onnx"
        onnx.save_model(proto, str(probe), save_as_external_data=True, location="probe.onnx.data")
        del proto
        options = ort.SessionOptions()
        options.intra_op_num_threads = encoder.session.get_session_options().intra_op_num_threads
        session = ort.InferenceSession(str(probe), options, providers=["CPUExecutionProvider"])
        low = dict.fromkeys(tensors, np.inf)
        high = dict.fromkeys(tensors, -np.inf)
        squares, counts = dict.fromkeys(tensors, 0.0), dict.fromkeys(tensors, 0)
        sample = list(texts)[:_PROBE_TEXTS]
        for start in range(0, len(sample), _PROBE_BATCH):
            feeds = encoder.features(sample[start : start + _PROBE_BATCH])
            real = feeds["attention_mask"].astype(bool)
            for name, x in zip(tensors, session.run(tensors, feeds), strict=True):
                values = x[real] if x.shape[:2] == real.shape else x.reshape(-1, x.shape[-1])
                low[name] = min(low[name], float(values.min()))
                high[name] = max(high[name], float(values.max()))
                squares[name] += float(np.square(values, dtype=np.float64).sum())
                counts[name] += values.size
    finally:
        shutil.rmtree(probe_dir, ignore_errors=True)
    ratio = {
        t: (high[t] - low[t]) / max(np.sqrt(squares[t] / max(counts[t], 1)), 1e-12) for t in tensors
    }
    return {node: float(ratio[t]) for node, t in nodes}


class _NoPreprocessHint(logging.Filter):
    """Drops onnxruntime's "Please consider to run pre-processing" warning, which it
    logs on the root logger at every quantization (seven times in a default run). The
    pre-processing it means (shape inference, graph fusions before quantizing) is not
    needed for dynamic quantization, and onnxruntime's transformer fusions brought no
    speed here (see the README)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def _quantize(src: Path, dst: Path, exclude: list[str]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    external = src.with_name(src.name + ".data").is_file()
    hint = _NoPreprocessHint()
    logging.getLogger().addFilter(hint)
    try:
        quantize_dynamic(
            src,
            dst,
            op_types_to_quantize=list(_OP_TYPES),
            per_channel=True,
            reduce_range=True,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude,
            use_external_data_format=external,
        )
    finally:
        logging.getLogger().removeFilter(hint)


@dataclass
class _Trial:
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


def _search(
    try_keep: Callable[[int], _Trial], n: int, min_cosine: float, max_trials: int
) -> list[_Trial]:
    """Find the fewest fp32 MatMuls that reach `min_cosine`: 0, 1, 2, 4, 8… then bisect.

    Returns:
        Every trial made, in order; the passing one with the smallest ``keep`` is the
        answer (none passes when the cosine is never reached within `max_trials`).
    """
    trials: list[_Trial] = []
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

    MatMul weights (and embedding tables) are quantized to int8 per output channel
    with 7-bit range; activations are quantized at run time. The MatMuls with the most
    outlying input activations are kept in fp32, as few as the cosine gate allows
    (see the module doc).

    Args:
        folder: A model folder holding an fp32 export (`distill.export.export_onnx`).
        texts: Check texts (real documents and queries; a few dozen suffice). The
            first 32 also serve to rank MatMuls by activation outliers.
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
            f"{src} not found; export first with distill.export.export_onnx(folder, texts)"
        )
    fp32 = OnnxEncoder(folder, name=folder.name)
    ref, fp32_speed = timed_encode(lambda t: fp32.encode(t, batch_size=batch_size), checked)
    ranges = activation_ranges(src, fp32, checked)
    ranked = sorted(ranges, key=lambda node: -ranges[node])
    tmp = folder / ONNX_DIR / f".int8-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)

    def try_keep(keep: int) -> _Trial:
        path = tmp / str(keep) / INT8_FILE
        path.parent.mkdir(parents=True)
        _quantize(src, path, ranked[:keep])
        int8 = OnnxEncoder(folder, name=folder.name, quantized=True, model_file=path)
        vecs, speed = timed_encode(lambda t: int8.encode(t, batch_size=batch_size), checked)
        cos = cosines(vecs, ref)
        size = files_mb(list(path.parent.iterdir()))
        logger.info("int8 with %d MatMuls in fp32: cosine %.4f", keep, cos.mean())
        # The encoder is not kept: each holds two onnxruntime sessions whose memory
        # arenas grow to a batch's activations; keeping the seven trials of a default
        # run alive took quantization to a 14.5 GB peak.
        return _Trial(keep, path, speed, float(cos.mean()), float(cos.min()), size)

    report: dict[str, Any] = {
        "path": str(folder / ONNX_DIR / INT8_FILE),
        "settings": {
            "op_types": list(_OP_TYPES),
            "per_channel": True,
            "reduce_range": True,
            "weight_type": "int8",
        },
        "num_texts": len(checked),
        "weight_matmuls": len(ranked),
        "fp32_size_mb": round(files_mb(onnx_files(folder, FP32_FILE)), 1),
        "fp32_docs_per_s": round(fp32_speed, 1),
        "min_cosine": gate.min_cosine,
    }
    try:
        trials = _search(try_keep, len(ranked), gate.min_cosine, max_trials)
        report["trials"] = [t.row() for t in trials]
        good = [t for t in trials if t.cosine_mean >= gate.min_cosine]
        best = min(good, key=lambda t: t.keep) if good else max(trials, key=lambda t: t.cosine_mean)
        report.update(
            cosine_mean=round(best.cosine_mean, 5),
            cosine_min=round(best.cosine_min, 5),
            size_mb=round(best.size_mb, 1),
            int8_docs_per_s=round(best.docs_per_s, 1),
            speedup=round(best.docs_per_s / fp32_speed, 2),
            fp32_nodes=ranked[: best.keep],
            fp32_node_ranges={n: round(ranges[n], 1) for n in ranked[: best.keep]},
        )
        fp32_score = int8_score = None
        if good and gate.evaluate is not None:
            int8 = OnnxEncoder(folder, name=folder.name, quantized=True, model_file=best.path)
            fp32_score, int8_score = gate.evaluate(fp32), gate.evaluate(int8)
            report.update(
                metric=gate.metric,
                fp32_score=round(fp32_score, 5),
                int8_score=round(int8_score, 5),
                relative_drop=round((fp32_score - int8_score) / max(fp32_score, 1e-12), 5),
            )
        passed, report["reason"] = gate_decision(gate, best.cosine_mean, fp32_score, int8_score)
        report["written"] = passed
        for old in onnx_files(folder, INT8_FILE):
            old.unlink(missing_ok=True)
        if passed:
            files = sorted(best.path.parent.iterdir(), key=lambda p: p.suffix == ".onnx")
            for path in files:  # external data first, graph last
                os.replace(path, folder / ONNX_DIR / path.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    keys = ("written", "reason", "cosine_mean", "size_mb", "speedup")
    entry = {k: report.get(k) for k in keys}
    update_manifest(folder, **{INT8_FILE: entry})
    if passed:
        logger.info("wrote %s: %s", report["path"], report["reason"])
    else:
        logger.warning("int8 model refused, not written: %s", report["reason"])
    return report
