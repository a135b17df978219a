"""Calibration for int8: what real inputs each weight MatMul sees, and GPTQ rounding.

`activation_stats` runs the fp32 graph on check texts and records, for every MatMul
whose second input is a weight, how outlying its inputs are (range over RMS) and their
Gram matrix XᵀX over real (unpadded) tokens. `round_weights` then rounds each weight to
7-bit integers per output channel with `gptq_round`, which compensates each input
row's rounding error on the rows not yet rounded so that the MatMul's output on those
inputs changes as little as possible.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from search.onnx_encoder import OnnxEncoder

__all__ = [
    "PROBE_TEXTS",
    "ActivationStats",
    "Rounded",
    "activation_stats",
    "gptq_round",
    "real_rows",
    "round_weights",
    "weight_matmuls",
]

PROBE_TEXTS = 32  # check texts that calibrate: the first ones given
_PROBE_BATCH = 8

Rounded = dict[str, tuple[np.ndarray, np.ndarray]]  # MatMul → (int8 weight, scales)


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
        sample = list(texts)[:PROBE_TEXTS]
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
