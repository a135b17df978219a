"""The int8 ONNX graph: weight MatMuls on per-token int8 activations, int8 tables.

`quantize_tables` stores the embedding tables (``Gather``) in int8, weight-only, with
onnxruntime's ``quantize_dynamic``; `write_int8` then rewrites each weight MatMul with
`per_token_int8`, using weights rounded by `distill.compress.gptq.round_weights`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from distill.compress.gptq import Rounded

__all__ = ["per_token_int8", "quantize_tables", "write_int8"]


_CONSTS: dict[str, np.ndarray] = {
    "pt_inv127": np.array(1 / 127, np.float32),
    "pt_eps": np.array(1e-12, np.float32),
    "pt_one": np.array(1.0, np.float32),
    "pt_zero_point": np.array(128, np.uint8),
}
"""The constants the per-token nodes read."""


def _quantize_activation(x: str, p: str) -> list[Any]:
    """Nodes that quantize activation `x` per token: ``{p}/xq`` (uint8, zero point
    128) and its scales ``{p}/scale`` (one per token)."""
    from onnx import helper

    return [
        helper.make_node("ReduceMax", [x], [f"{p}/hi"], axes=[-1], keepdims=1),
        helper.make_node("ReduceMin", [x], [f"{p}/lo"], axes=[-1], keepdims=1),
        helper.make_node("Neg", [f"{p}/lo"], [f"{p}/neg_lo"]),
        helper.make_node("Max", [f"{p}/hi", f"{p}/neg_lo", "pt_eps"], [f"{p}/absmax"]),
        helper.make_node("Mul", [f"{p}/absmax", "pt_inv127"], [f"{p}/scale"]),
        helper.make_node("Div", [x, f"{p}/scale"], [f"{p}/scaled"]),
        helper.make_node("QuantizeLinear", [f"{p}/scaled", "pt_one", "pt_zero_point"], [f"{p}/xq"]),
    ]


def _drop_unused_weights(graph: Any) -> None:
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


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
    added = [numpy_helper.from_array(v, k) for k, v in _CONSTS.items()]
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
            nodes += _quantize_activation(x, p)
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
    _drop_unused_weights(graph)
    if not any(op.domain == "com.microsoft" for op in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return done


_PREPROCESS_HINT = "pre-processing before quantization"


class _OnnxruntimePreprocessHint(logging.Filter):
    """Matches onnxruntime's "Please consider to run pre-processing before quantization"
    warning and nothing else: that text, logged from onnxruntime's own files."""

    def filter(self, record: logging.LogRecord) -> bool:
        from_onnxruntime = f"{os.sep}onnxruntime{os.sep}" in record.pathname
        return not (from_onnxruntime and _PREPROCESS_HINT in record.getMessage())


@contextmanager
def _without_preprocess_hint() -> Iterator[None]:
    """Drop onnxruntime's pre-processing warning while the block runs.

    onnxruntime logs it at every quantization with a bare ``logging.warning``, so it
    goes through the root logger and no narrower logger carries it; the filter sits on
    the root logger only for the block and drops only that record. The pre-processing
    it means (shape inference, graph fusions before quantizing) is not needed to store
    embedding tables in int8, and onnxruntime's transformer fusions do not speed up
    this graph (docs/experiments.md).
    """
    hint = _OnnxruntimePreprocessHint()
    root = logging.getLogger()
    root.addFilter(hint)
    try:
        yield
    finally:
        root.removeFilter(hint)


def quantize_tables(src: Path, dst: Path) -> None:
    """Write `src` with its embedding tables (``Gather``) in int8, weight-only, by
    ``quantize_dynamic``; the MatMuls are left to `write_int8`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _without_preprocess_hint():
        quantize_dynamic(
            src,
            dst,
            op_types_to_quantize=["Gather"],
            per_channel=True,
            weight_type=QuantType.QInt8,
            use_external_data_format=_external(src),
        )


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
