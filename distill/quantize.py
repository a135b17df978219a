"""Int8 quantization of an exported ONNX encoder, behind a quality gate.

Each MatMul with a weight runs as ``MatMulIntegerToFloat`` (unless kept in fp32,
below): int8 activations times int8 weights, accumulated in int32. Plain dynamic
quantization (onnxruntime's ``quantize_dynamic``) breaks some encoders: on
all-mpnet-base-v2 the cosine between int8 and fp32 embeddings falls to 0.4–0.6.
Three causes, three fixes:

- **Weight saturation.** Without AVX-512 VNNI, onnxruntime's u8×s8 kernels add pairs
  of products in int16, which overflows for full-range 8-bit weights (per-channel
  scales make that common: cosine ~0); its u8×u8 and s8×s8 kernels do not overflow
  but ran 17 % and 3.7× slower here. Weights are therefore quantized to 7 bits, which
  cannot overflow on any x86 CPU, per output channel.
- **Activation outliers.** ``quantize_dynamic`` quantizes activations per tensor, so
  a MatMul whose input has a few huge values (FFN down-projections; in MPNet their
  range is 150–290× their RMS) loses everything else. Here each
  *token's* activations get their own scale (``ReduceMax``/``ReduceMin`` over the
  hidden axis, symmetric 8-bit, zero point 128), which isolates the outlier tokens: on
  the FFN down-projections of MiniLM's first three layers the error of the int8
  product fell from 7.5–10 % to 3–4 %, close to the weight rounding alone.
- **Weight rounding.** What error is left is mostly 7-bit weight rounding. Weights
  are rounded with GPTQ (Frantar et al., 2022): input by input, each rounding
  error is compensated on the weights not yet rounded, using the Gram matrix of the
  MatMul's real inputs on the check texts. On MiniLM that cut the mean error of the
  int8 products from 1.9 % to 1.5 % (8-bit weights: 1.4 %).

If the int8 model still disagrees with fp32, the MatMuls with the most outlying
inputs are kept in fp32 — 0, 1, 2, 4, 8… of them — until it agrees. Embedding tables
(``Gather``) are stored in int8 by ``quantize_dynamic`` (weight-only: size, not speed).

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
            0.996, not 0.99: with per-tensor activation scales the default student's
            int8 model at cosine 0.993 lost 1 % nDCG@10 on 300 held-out SciFact train
            queries over the full corpus (0.6597 vs 0.6661) where the retrieval gate's
            1,000-document slice saw 0.1 %; at 0.996 (5 MatMuls in fp32) it lost
            nothing there. Per-token scales and GPTQ reach 0.997 with none in fp32.
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


def real_rows(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The rows of activation `x` that belong to real tokens, as ``[rows, features]``.

    Per-token tensors (``[batch, tokens, features]``) lose their padding; anything else
    (e.g. ``[batch, features]`` after pooling, even when ``features`` happens to equal
    the padded length) is only flattened to rows.
    """
    if x.ndim == 3 and x.shape[:2] == mask.shape:
        return x[mask]
    return x.reshape(-1, x.shape[-1])


@dataclass
class ActivationStats:
    """What the check texts' real tokens put into one weight MatMul.

    Attributes:
        range_ratio: (max − min) / RMS of the inputs: how hard they are to quantize
            with one scale (larger: a few outliers set the scale).
        gram: XᵀX of the inputs (float64), GPTQ's second-order information.
    """

    range_ratio: float
    gram: np.ndarray


def activation_stats(
    model_path: Path, encoder: OnnxEncoder, texts: Sequence[str]
) -> dict[str, ActivationStats]:
    """Measure each weight MatMul's input over real (unpadded) tokens of `texts`.

    Runs onnxruntime once on a copy of the graph that also outputs every weight
    MatMul's input.

    Returns:
        {MatMul node name: its `ActivationStats`}.
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
        counts = dict.fromkeys(tensors, 0)
        grams: dict[str, np.ndarray] = {}  # XᵀX; its trace is the sum of squares
        sample = list(texts)[:_PROBE_TEXTS]
        for start in range(0, len(sample), _PROBE_BATCH):
            feeds = encoder.features(sample[start : start + _PROBE_BATCH])
            real = feeds["attention_mask"].astype(bool)
            for name, x in zip(tensors, session.run(tensors, feeds), strict=True):
                values = real_rows(x, real)
                low[name] = min(low[name], float(values.min()))
                high[name] = max(high[name], float(values.max()))
                counts[name] += values.size
                v64 = values.astype(np.float64)
                grams[name] = grams.get(name, 0.0) + v64.T @ v64
    finally:
        shutil.rmtree(probe_dir, ignore_errors=True)
    stats = {
        t: ActivationStats(
            (high[t] - low[t]) / max(np.sqrt(np.trace(grams[t]) / max(counts[t], 1)), 1e-12),
            grams[t],
        )
        for t in tensors
    }
    return {node: stats[t] for node, t in nodes}


Rounded = dict[str, tuple[np.ndarray, np.ndarray]]  # MatMul → (int8 weight, scales)


def gptq_round(
    weight: np.ndarray, gram: np.ndarray, *, bits: int = 7, damp: float = 0.01
) -> tuple[np.ndarray, np.ndarray]:
    """Round a MatMul weight to signed `bits`-bit integers per output column, GPTQ-style.

    For ``y = x @ weight`` (weight ``[in, out]``), input rows are rounded one at a time
    and each row's rounding error is spread over the rows not yet rounded so as to
    minimise ``‖X @ weight − X @ q‖²`` for the inputs whose Gram matrix is `gram`
    (Frantar et al., "GPTQ", 2022, without its blocking: these matrices are small).
    Scales are per output column, ``max|w| / (2^(bits−1) − 1)`` of the original weight.

    Args:
        weight: float ``[in, out]``.
        gram: ``XᵀX`` of real inputs, ``[in, in]``.
        bits: Integer width (7: the range onnxruntime's u8×s8 kernels cannot overflow).
        damp: Added to the Gram diagonal, as a fraction of its mean, for stability.

    Returns:
        (int8 ``[in, out]``, float32 scales ``[out]``); ``q * scales`` approximates
        `weight`.
    """
    top = 2 ** (bits - 1) - 1
    w = weight.astype(np.float64).copy()
    scales = np.maximum(np.abs(w).max(axis=0), 1e-12) / top
    h = gram.astype(np.float64).copy()
    dead = np.diag(h) == 0  # inputs that were always zero: their weights never matter
    h[dead, dead] = 1.0
    w[dead, :] = 0.0
    h[np.diag_indices_from(h)] += damp * float(np.mean(np.diag(h)))
    # Upper Cholesky factor of H⁻¹: row i holds how row i's error moves rows after it.
    hinv = np.linalg.cholesky(np.linalg.inv(h)).T
    q = np.empty(w.shape, dtype=np.int8)
    for i in range(w.shape[0]):
        row = np.clip(np.round(w[i] / scales), -top, top)
        q[i] = row
        error = (w[i] - row * scales) / hinv[i, i]
        w[i + 1 :] -= np.outer(hinv[i, i + 1 :], error)
    return q, scales.astype(np.float32)


def per_token_int8(proto: Any, rounded: Rounded, exclude: Sequence[str] = ()) -> int:
    """Rewrite weight MatMuls of `proto` (in place) to per-token int8 activations.

    Each ``y = MatMul(x, W)`` named in `rounded` (and not in `exclude`) becomes::

        s  = max(max(x), −min(x)) / 127 over the last axis (one scale per token)
        xq = QuantizeLinear(x / s, 1, 128)                      uint8
        y  = MatMulIntegerToFloat(xq, q, 1, scales, 128, 0) · s

    with ``(q, scales)`` from `rounded` (e.g. `gptq_round`). Weights no node uses any
    more are removed.

    Returns:
        How many MatMuls were rewritten.
    """
    from onnx import helper, numpy_helper

    graph = proto.graph
    consts: dict[str, np.ndarray] = {
        "pt_inv127": np.array(1 / 127, np.float32),
        "pt_eps": np.array(1e-12, np.float32),
        "pt_one": np.array(1.0, np.float32),
        "pt_zero_point": np.array(128, np.uint8),
    }
    added = [numpy_helper.from_array(v, k) for k, v in consts.items()]
    skip = set(exclude)
    nodes, done = [], 0
    quantized: dict[str, tuple[str, str]] = {}  # input → (its int8 tensor, its scales)
    for node in graph.node:
        if node.op_type != "MatMul" or node.name not in rounded or node.name in skip:
            nodes.append(node)
            continue
        q, scales = rounded[node.name]
        p = f"{node.name}/pt"
        added += [
            numpy_helper.from_array(q, f"{p}/W"),
            numpy_helper.from_array(scales, f"{p}/W_scale"),
            numpy_helper.from_array(np.zeros(q.shape[1], np.int8), f"{p}/W_zero_point"),
        ]
        x, y = node.input[0], node.output[0]
        if x not in quantized:  # query, key and value projections share one input
            quantized[x] = (f"{p}/xq", f"{p}/scale")
            nodes += [
                helper.make_node("ReduceMax", [x], [f"{p}/hi"], axes=[-1], keepdims=1),
                helper.make_node("ReduceMin", [x], [f"{p}/lo"], axes=[-1], keepdims=1),
                helper.make_node("Neg", [f"{p}/lo"], [f"{p}/neg_lo"]),
                helper.make_node("Max", [f"{p}/hi", f"{p}/neg_lo", "pt_eps"], [f"{p}/absmax"]),
                helper.make_node("Mul", [f"{p}/absmax", "pt_inv127"], [f"{p}/scale"]),
                helper.make_node("Div", [x, f"{p}/scale"], [f"{p}/scaled"]),
                helper.make_node(
                    "QuantizeLinear", [f"{p}/scaled", "pt_one", "pt_zero_point"], [f"{p}/xq"]
                ),
            ]
        xq, x_scale = quantized[x]
        nodes += [
            helper.make_node(
                "MatMulIntegerToFloat",
                [xq, f"{p}/W", "pt_one", f"{p}/W_scale", "pt_zero_point", f"{p}/W_zero_point"],
                [f"{p}/y"],
                domain="com.microsoft",
            ),
            helper.make_node("Mul", [f"{p}/y", x_scale], [y], name=node.name),
        ]
        done += 1
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(added)
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if not any(op.domain == "com.microsoft" for op in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return done


class _NoPreprocessHint(logging.Filter):
    """Drops onnxruntime's "Please consider to run pre-processing" warning, which it
    logs on the root logger at every quantization (seven times in a default run). The
    pre-processing it means (shape inference, graph fusions before quantizing) is not
    needed for dynamic quantization, and onnxruntime's transformer fusions brought no
    speed here (see the README)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def round_weights(model_path: Path, stats: dict[str, ActivationStats]) -> Rounded:
    """GPTQ-round the weight of every MatMul in `stats` (see `gptq_round`).

    Returns:
        {MatMul node name: (int8 weight, per-column scales)}.
    """
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(model_path))
    weights = {init.name: init for init in proto.graph.initializer}
    rounded: Rounded = {}
    for node in proto.graph.node:
        if node.op_type == "MatMul" and node.name in stats and node.input[1] in weights:
            weight = numpy_helper.to_array(weights[node.input[1]])
            if weight.ndim == 2:
                rounded[node.name] = gptq_round(weight, stats[node.name].gram)
    return rounded


def quantize_tables(src: Path, dst: Path) -> None:
    """Write `src` with its embedding tables (``Gather``) in int8, weight-only, by
    ``quantize_dynamic``; the MatMuls are left to `write_int8`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    hint = _NoPreprocessHint()
    logging.getLogger().addFilter(hint)
    try:
        quantize_dynamic(
            src,
            dst,
            op_types_to_quantize=["Gather"],
            per_channel=True,
            weight_type=QuantType.QInt8,
            use_external_data_format=_external(src),
        )
    finally:
        logging.getLogger().removeFilter(hint)


def write_int8(tables: Path, dst: Path, exclude: Sequence[str], rounded: Rounded) -> None:
    """Write the int8 graph: `tables` (from `quantize_tables`, left as it is) with every
    MatMul in `rounded` but those in `exclude` as per-token int8."""
    import onnx

    proto = onnx.load(str(tables))
    per_token_int8(proto, rounded, exclude)
    if _external(tables):
        onnx.save_model(proto, str(dst), save_as_external_data=True, location=dst.name + ".data")
    else:
        onnx.save_model(proto, str(dst))


def _external(model: Path) -> bool:
    return model.with_name(model.name + ".data").is_file()


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

    MatMul weights are GPTQ-rounded to 7 bits per output channel and their inputs
    quantized per token at run time; embedding tables are stored in int8. The MatMuls
    with the most outlying input activations are kept in fp32, as few as the cosine
    gate allows (see the module doc).

    Args:
        folder: A model folder holding an fp32 export (`distill.export.export_onnx`).
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
            f"{src} not found; export first with distill.export.export_onnx(folder, texts)"
        )
    fp32 = OnnxEncoder(folder, name=folder.name)
    ref, fp32_speed = timed_encode(lambda t: fp32.encode(t, batch_size=batch_size), checked)
    stats = activation_stats(src, fp32, checked)
    ranges = {node: float(s.range_ratio) for node, s in stats.items()}
    ranked = sorted(ranges, key=lambda node: -ranges[node])
    rounded = round_weights(src, stats)
    del stats  # the Gram matrices: 0.1 GB for MiniLM, 1 GB for MPNet
    # GPTQ fits the weights to the first _PROBE_TEXTS texts; the cosine is measured on
    # the others when there are enough of them.
    held = slice(_PROBE_TEXTS, None) if len(checked) >= _PROBE_TEXTS + 16 else slice(None)
    tmp = folder / ONNX_DIR / f".int8-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tables = tmp / "tables" / INT8_FILE  # the same for every trial: quantized once

    def try_keep(keep: int) -> _Trial:
        path = tmp / str(keep) / INT8_FILE
        path.parent.mkdir(parents=True)
        write_int8(tables, path, ranked[:keep], rounded)
        int8 = OnnxEncoder(folder, name=folder.name, quantized=True, model_file=path)
        vecs, speed = timed_encode(lambda t: int8.encode(t, batch_size=batch_size), checked)
        cos = cosines(vecs[held], ref[held])
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
            "activations": "per token, symmetric 8-bit",
            "weights": "per output channel, 7-bit, GPTQ-rounded",
        },
        "num_texts": len(checked),
        "calibration_texts": min(len(checked), _PROBE_TEXTS),
        "cosine_texts": len(ref[held]),
        "weight_matmuls": len(ranked),
        "fp32_size_mb": round(files_mb(onnx_files(folder, FP32_FILE)), 1),
        "fp32_docs_per_s": round(fp32_speed, 1),
        "min_cosine": gate.min_cosine,
    }
    try:
        tables.parent.mkdir(parents=True)
        quantize_tables(src, tables)
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
