"""Compressing a saved model folder: ONNX export checked against torch, then int8
behind the retrieval gate (`distill.compress.quantize`)."""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import JsonValue

from distill.compress.export import CompressionError, export_onnx
from distill.compress.quantize import Evaluation, QualityGate, quantize_int8
from search.encoder import available_backends

logger = logging.getLogger(__name__)


def compress(
    folder: Path, texts: list[str], evaluate: Evaluation, *, min_cosine: float
) -> dict[str, JsonValue]:
    """ONNX export (checked against torch), then int8 behind the retrieval gate.

    Args:
        folder: A saved sentence-transformers model folder; the exports are written
            under its ``onnx/``.
        texts: Texts the export and the int8 calibration are checked on.
        evaluate: nDCG@10 of an encoder on validation queries (never test queries):
            int8 is refused when it drops more than 1 % against fp32 ONNX.
        min_cosine: The int8-to-fp32 cosine that decides how many MatMuls stay fp32.

    Returns:
        ``{"onnx": export report, "int8": quantization report}``, or ``{"error": ...}``
        beside what was done when a step failed.
    """
    out: dict[str, JsonValue] = {}
    try:
        out["onnx"] = export_onnx(folder, texts)
        gate = QualityGate(min_cosine=min_cosine, evaluate=evaluate)
        out["int8"] = quantize_int8(folder, texts, gate)
    except CompressionError as exc:
        logger.warning("compression stopped: %s", exc)
        out["error"] = str(exc)
    return out


def served_speed(folder: Path, compression: dict[str, JsonValue]) -> tuple[str, float] | None:
    """(backend, texts/s) of the artifact ``auto`` serves from `folder`
    (`search.encoder.available_backends` decides), as `compress` measured it; None when
    that is torch (no export)."""
    backend = available_backends(folder)[0]
    key = {"onnx-int8": ("int8", "int8_docs_per_s"), "onnx": ("onnx", "onnx_docs_per_s")}
    if backend not in key:
        return None
    part, field = key[backend]
    record = compression.get(part)
    rate = record.get(field) if isinstance(record, dict) else None
    return (backend, float(rate)) if isinstance(rate, int | float) and rate else None
