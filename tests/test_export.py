"""ONNX export: graph with pooling and normalisation inside, checked against torch."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer import modules

from distill.compress.export import (
    CompressionError,
    eager_attention,
    export_onnx,
    pool_tokens,
    timed_encode,
)
from search.onnx_encoder import OnnxEncoder

TEXTS = [
    "a",
    "Cats purr when they are content.",
    "Protein folding determines the structure and function of enzymes in cells. " * 6,
    "What causes cancer?",
    "Dogs are loyal animals kept as pets and for herding sheep on farms.",
]


@pytest.fixture
def tiny_copy(tiny_model: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_model, tmp_path / "model"))


def _torch(folder: Path, texts: list[str]) -> np.ndarray:
    model = SentenceTransformer(str(folder), device="cpu")
    return model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)


@pytest.mark.parametrize("mode", ["mean", "cls", "max", "mean_sqrt_len_tokens"])
def test_pool_tokens_matches_sentence_transformers(mode: str) -> None:
    torch.manual_seed(0)
    hidden = torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]])
    expected = modules.Pooling(4, pooling_mode=mode)(
        {"token_embeddings": hidden.clone(), "attention_mask": mask}
    )["sentence_embedding"]
    torch.testing.assert_close(pool_tokens(hidden, mask, [mode]), expected)


def test_pool_tokens_mean_ignores_padding_by_hand() -> None:
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    torch.testing.assert_close(pool_tokens(hidden, mask, ["mean"]), torch.tensor([[2.0, 3.0]]))
    both = pool_tokens(hidden, mask, ["cls", "max"])
    torch.testing.assert_close(both, torch.tensor([[1.0, 2.0, 3.0, 4.0]]))


def test_export_matches_torch_and_writes_manifest(tiny_copy: Path) -> None:
    report = export_onnx(tiny_copy, TEXTS)
    assert (tiny_copy / "onnx" / "model.onnx").is_file()
    assert report["cosine_mean"] >= 0.999 and report["cosine_min"] >= 0.999
    assert report["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert report["pooling"] == ["mean"] and report["dim"] == 32 and report["size_mb"] > 0
    manifest = json.loads((tiny_copy / "onnx" / "manifest.json").read_text())
    assert manifest["max_seq_length"] == 64 and manifest["dim"] == 32
    # Traced with eager attention: SDPA's masking ops (IsNaN/Where) slow onnxruntime.
    assert report["attention"] == manifest["attention"] == "eager"
    graph = onnx.load(str(tiny_copy / "onnx" / "model.onnx"), load_external_data=False)
    assert "IsNaN" not in {node.op_type for node in graph.graph.node}
    # Dynamic batch and sequence axes: other batch sizes and lengths than the trace's.
    encoder = OnnxEncoder(tiny_copy, name="tiny")
    texts = [*TEXTS, "one more", "x " * 300]  # the last is truncated to 64 tokens
    for batch_size in (1, 3, 32):
        vecs = encoder.encode(texts, batch_size=batch_size)
        cos = np.sum(vecs * _torch(tiny_copy, texts), axis=1)
        assert cos.min() > 0.9999, (batch_size, cos)


def test_export_with_cls_pooling_and_dense_head(tiny_model: Path, tmp_path: Path) -> None:
    base = SentenceTransformer(str(tiny_model), device="cpu")
    torch.manual_seed(1)
    model = SentenceTransformer(
        modules=[base[0], modules.Pooling(32, pooling_mode="cls"), modules.Dense(32, 16)],
        device="cpu",
    )
    folder = tmp_path / "cls-dense"
    model.save(str(folder))
    report = export_onnx(folder, TEXTS)
    assert report["pooling"] == ["cls"] and report["heads"] == ["Dense"] and report["dim"] == 16
    vecs = OnnxEncoder(folder).encode(TEXTS)
    np.testing.assert_allclose(vecs, _torch(folder, TEXTS), atol=1e-4)


def test_export_refuses_disagreement_and_writes_nothing(tiny_copy: Path) -> None:
    with pytest.raises(CompressionError, match=r"mean cosine 1\.0+ .*need >= 1\.01"):
        export_onnx(tiny_copy, TEXTS, min_cosine=1.01)
    assert not (tiny_copy / "onnx" / "model.onnx").exists()
    assert [p.name for p in (tiny_copy / "onnx").iterdir()] == []  # no temp files left


def test_export_refuses_unsupported_pooling(tiny_model: Path, tmp_path: Path) -> None:
    base = SentenceTransformer(str(tiny_model), device="cpu")
    folder = tmp_path / "weighted"
    SentenceTransformer(
        modules=[base[0], modules.Pooling(32, pooling_mode="weightedmean")], device="cpu"
    ).save(str(folder))
    with pytest.raises(CompressionError, match="weightedmean"):
        export_onnx(folder, TEXTS)


def test_export_refuses_a_model_without_a_transformer_first(tmp_path: Path) -> None:
    folder = tmp_path / "bare"
    SentenceTransformer(modules=[modules.Normalize()], device="cpu").save(str(folder))
    with pytest.raises(CompressionError, match=r"cannot export modules \['Normalize'\]"):
        export_onnx(folder, TEXTS)


def test_eager_attention_is_restored_after_the_trace(tiny_model: Path) -> None:
    transformer = SentenceTransformer(str(tiny_model), device="cpu")[0].auto_model
    before = transformer.config._attn_implementation
    with eager_attention(transformer) as traced:
        assert traced == transformer.config._attn_implementation == "eager"
    assert transformer.config._attn_implementation == before != "eager"


def test_reexport_drops_int8_made_from_old_graph(tiny_copy: Path) -> None:
    export_onnx(tiny_copy, TEXTS)
    stale = tiny_copy / "onnx" / "model_int8.onnx"
    stale.write_bytes(b"old")
    export_onnx(tiny_copy, TEXTS)
    assert not stale.exists()


def test_export_needs_texts(tiny_copy: Path) -> None:
    with pytest.raises(ValueError, match="non-empty text"):
        export_onnx(tiny_copy, ["", "  "])


def test_timed_encode_warms_up_then_keeps_the_fastest_call() -> None:
    delays = iter([0.08, 0.05, 0.01, 0.05])  # the warm-up, then three timed calls
    calls: list[int] = []

    def encode(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        time.sleep(next(delays))
        return np.ones((len(texts), 2))

    vecs, rate = timed_encode(encode, ["a", "b"])
    assert calls == [2, 2, 2, 2] and vecs.shape == (2, 2) and vecs.dtype == np.float32
    assert 2 / 0.05 < rate <= 2 / 0.01  # the 0.01 s call, not the warm-up or the mean
