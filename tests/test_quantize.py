"""Int8 quantization: the search for fp32 MatMuls, the quality gate, what gets written."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from distill.compress.export import export_onnx
from distill.compress.gptq import (
    activation_stats,
    gptq_round,
    real_rows,
    round_weights,
    weight_matmuls,
)
from distill.compress.int8_graph import quantize_tables, write_int8
from distill.compress.quantize import QualityGate, Trial, fewest_fp32, gate_decision, quantize_int8
from search.embed_cache import cache_for, cache_key
from search.encoder import Encoder, available_backends, load_encoder
from search.onnx_encoder import OnnxEncoder

TEXTS = [
    "Cats purr when they are content.",
    "Protein folding determines the structure of enzymes in cells.",
    "What causes cancer?",
    "Dogs are loyal animals kept as pets and for herding sheep.",
    "A compiler translates source code into machine code.",
    "Vitamin D deficiency is linked to bone loss in older adults.",
]


@pytest.fixture(scope="module")
def exported(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(shutil.copytree(tiny_model, tmp_path_factory.mktemp("quant") / "m"))
    export_onnx(folder, TEXTS)
    return folder


@pytest.fixture
def fresh(exported: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(exported, tmp_path / "m"))


def test_gate_decision_by_hand() -> None:
    gate = QualityGate(min_cosine=0.99, max_relative_drop=0.01)
    assert gate_decision(gate, 0.995) == (
        True,
        "cosine to fp32 0.9950 >= 0.99 (no retrieval check)",
    )
    passed, why = gate_decision(gate, 0.98, 0.5, 0.5)
    assert not passed and "0.9800 < 0.99" in why
    assert gate_decision(gate, 0.995, 0.500, 0.496)[0]  # 0.8 % drop
    passed, why = gate_decision(gate, 0.995, 0.500, 0.490)  # 2 % drop
    assert not passed and "relative drop 2.00 %" in why and "0.4900 vs fp32 0.5000" in why
    assert gate_decision(gate, 0.995, 0.5, 0.6)[0]  # int8 better: fine


def _fake_trial(keep: int, cosine: float) -> Trial:
    return Trial(keep, Path("x"), 1.0, cosine, cosine, 1.0)


def test_search_doubles_then_bisects() -> None:
    tried: list[int] = []

    def try_keep(keep: int) -> Trial:
        tried.append(keep)
        return _fake_trial(keep, 0.999 if keep >= 5 else 0.9)

    trials = fewest_fp32(try_keep, n=40, min_cosine=0.99, max_trials=10)
    assert tried == [0, 1, 2, 4, 8, 6, 5]
    assert min(t.keep for t in trials if t.cosine_mean >= 0.99) == 5
    tried.clear()
    fewest_fp32(try_keep, n=40, min_cosine=0.99, max_trials=3)
    assert tried == [0, 1, 2]  # budget respected, nothing passes
    tried.clear()
    fewest_fp32(try_keep, n=3, min_cosine=0.99, max_trials=10)
    assert tried == [0, 1, 2, 3]  # capped at every node, then gives up


def test_activation_ranges_cover_weight_matmuls(exported: Path) -> None:
    src = exported / "onnx" / "model.onnx"
    stats = activation_stats(src, OnnxEncoder(exported), TEXTS)
    ranges = {node: s.range_ratio for node, s in stats.items()}
    nodes = [name for name, _ in weight_matmuls(src)]
    assert sorted(ranges) == sorted(nodes) and len(nodes) == 2 * 6  # 2 layers: q k v o up down
    assert all(np.isfinite(v) and v > 1 for v in ranges.values())
    assert not list((exported / "onnx").glob(".probe-*"))


def test_gptq_round_beats_round_to_nearest_on_correlated_inputs() -> None:
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(48, 48))
    x = rng.normal(size=(2000, 48)) @ mix  # strongly correlated input features
    w = rng.normal(size=(48, 16)).astype(np.float32)
    q, scales = gptq_round(w, x.T @ x, bits=4)
    assert q.dtype == np.int8 and scales.shape == (16,) and np.abs(q).max() <= 7
    nearest = np.clip(np.round(w / scales), -7, 7) * scales
    error = lambda approx: np.linalg.norm(x @ approx - x @ w)  # noqa: E731
    assert error(q * scales) < 0.85 * error(nearest)  # 0.79 with this seed
    # Scales come from the original weight: the largest entry of each column is ±7.
    np.testing.assert_allclose(np.abs(w).max(axis=0) / 7, scales, rtol=1e-6)
    # An input that is always zero: its weights cannot matter and are zeroed.
    x[:, 3] = 0
    q, _ = gptq_round(w, x.T @ x, bits=4)
    assert not q[3].any()


def test_real_rows_drop_padding_of_token_tensors_only() -> None:
    mask = np.array([[1, 1, 0], [1, 0, 0]], dtype=bool)
    tokens = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(real_rows(tokens, mask), tokens[[0, 0, 1], [0, 1, 0]])
    # A pooled [batch, features] tensor whose width equals the padded length (384 and a
    # batch padded to 384 tokens once made its rows look like tokens): kept whole.
    pooled = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(real_rows(pooled, mask), pooled)


def test_int8_graph_is_per_token(exported: Path, tmp_path: Path) -> None:
    """Every weight MatMul runs on int8 inputs with one scale per token: a token with
    huge activations (the outliers that break per-tensor scales) leaves the others'
    precision alone."""
    import onnx

    src = exported / "onnx" / "model.onnx"
    stats = activation_stats(src, OnnxEncoder(exported), TEXTS)
    assert all(s.gram.shape[0] == s.gram.shape[1] for s in stats.values())
    rounded = round_weights(src, stats)
    assert sorted(rounded) == sorted(name for name, _ in weight_matmuls(src))
    tables, dst = tmp_path / "tables.onnx", tmp_path / "model_int8.onnx"
    quantize_tables(src, tables)
    write_int8(tables, dst, [], rounded)
    ops = [node.op_type for node in onnx.load(str(dst)).graph.node]
    assert ops.count("MatMulIntegerToFloat") == len(rounded)
    inputs = {x for _, x in weight_matmuls(src)}  # q, k and v share theirs
    assert ops.count("QuantizeLinear") == len(inputs) < len(rounded)
    assert "DynamicQuantizeLinear" not in ops  # no per-tensor activation scales
    # The staged tables serve every trial: writing one leaves them as they were.
    write_int8(tables, dst, [weight_matmuls(src)[0][0]], rounded)
    ops = [node.op_type for node in onnx.load(str(dst)).graph.node]
    assert ops.count("MatMulIntegerToFloat") == len(rounded) - 1
    assert len(weight_matmuls(tables)) == len(rounded)


def test_quantize_writes_int8_that_agrees(fresh: Path, caplog: pytest.LogCaptureFixture) -> None:
    root_filters = list(logging.getLogger().filters)
    with caplog.at_level(logging.INFO):
        report = quantize_int8(fresh, TEXTS)
    assert not [r for r in caplog.records if "pre-processing" in r.getMessage()]
    assert logging.getLogger().filters == root_filters  # the hint's filter left with the call
    assert any("wrote" in r.getMessage() for r in caplog.records)  # our own logs pass
    assert report["written"] and (fresh / "onnx" / "model_int8.onnx").is_file()
    assert report["cosine_mean"] >= 0.99 and report["size_mb"] < report["fp32_size_mb"]
    assert report["trials"][0]["fp32_nodes"] == 0
    int8 = OnnxEncoder(fresh, quantized=True)
    fp32 = OnnxEncoder(fresh)
    cos = np.sum(int8.encode(TEXTS) * fp32.encode(TEXTS), axis=1)
    assert cos.mean() == pytest.approx(report["cosine_mean"], abs=1e-4)
    manifest = json.loads((fresh / "onnx" / "manifest.json").read_text())
    assert manifest["model_int8.onnx"]["written"] is True and manifest["dim"] == 32
    assert manifest["model_int8.onnx"]["speedup"] == report["speedup"]
    assert available_backends(fresh) == ["onnx-int8", "onnx", "torch"]
    assert load_encoder(fresh).backend == "onnx-int8"
    assert load_encoder(fresh, backend="onnx").backend == "onnx"
    assert not list((fresh / "onnx").glob(".int8-*"))


def test_retrieval_gate_refuses_and_deletes_old_int8(fresh: Path) -> None:
    seen: list[str] = []

    def evaluate(encoder: Encoder) -> float:  # int8 loses 5 % of the metric
        seen.append(encoder.backend)
        return 0.50 if encoder.backend == "onnx" else 0.475

    old = fresh / "onnx" / "model_int8.onnx"
    old.write_bytes(b"an int8 model from an earlier run")
    report = quantize_int8(fresh, TEXTS, QualityGate(evaluate=evaluate, max_relative_drop=0.01))
    assert seen == ["onnx", "onnx-int8"]
    assert not report["written"] and not old.exists()
    assert report["relative_drop"] == pytest.approx(0.05)
    assert "relative drop 5.00 %" in report["reason"]
    assert available_backends(fresh) == ["onnx", "torch"]

    lenient = QualityGate(evaluate=evaluate, max_relative_drop=0.06)
    assert quantize_int8(fresh, TEXTS, lenient)["written"]


def test_cosine_gate_refuses_after_keeping_more_in_fp32(fresh: Path) -> None:
    report = quantize_int8(fresh, TEXTS, QualityGate(min_cosine=1.01), max_trials=3)
    assert not report["written"] and "< 1.01" in report["reason"]
    assert [t["fp32_nodes"] for t in report["trials"]] == [0, 1, 2]
    assert not (fresh / "onnx" / "model_int8.onnx").exists()
    manifest = json.loads((fresh / "onnx" / "manifest.json").read_text())
    assert manifest["model_int8.onnx"]["written"] is False


def test_requantized_int8_gets_its_own_embedding_cache(fresh: Path, tmp_path: Path) -> None:
    """Re-quantizing rewrites model_int8.onnx under the same model hash; vectors cached
    for the old artifact must not be served for the new one."""
    assert quantize_int8(fresh, TEXTS)["written"]
    first = OnnxEncoder(fresh, quantized=True)
    cache = cache_for(first, tmp_path)
    cache.encode(first, TEXTS, progress=False)
    src, dst = fresh / "onnx" / "model.onnx", fresh / "onnx" / "model_int8.onnx"
    rounded = round_weights(src, activation_stats(src, OnnxEncoder(fresh), TEXTS))
    tables = tmp_path / "tables.onnx"
    quantize_tables(src, tables)
    write_int8(tables, dst, [weight_matmuls(src)[0][0]], rounded)  # one MatMul more in fp32
    second = OnnxEncoder(fresh, quantized=True)
    assert second.model_hash == first.model_hash
    assert cache_key(second) != cache_key(first)
    assert len(cache_for(second, tmp_path)) == 0
    cache_for(second, tmp_path).encode(second, TEXTS, progress=False)
    again = OnnxEncoder(fresh, quantized=True)  # the same artifact reopened: same cache
    assert cache_key(again) == cache_key(second)
    assert len(cache_for(again, tmp_path)) == len(TEXTS)
    assert cache_key(OnnxEncoder(fresh)) not in {cache_key(first), cache_key(second)}
    assert cache_key(load_encoder(fresh, backend="torch")) == first.model_hash
