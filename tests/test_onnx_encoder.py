"""OnnxEncoder: tokenisation as sentence-transformers does it, order, errors, loading."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from distill.compress.export import export_onnx
from search.assets import model_hash
from search.encoder import available_backends, load_encoder
from search.onnx_encoder import OnnxEncoder
from search.types import AssetError

TEXTS = [
    "Short query",
    "ÉCOLE Normale — accents, UPPER case and punctuation!",
    "Protein folding determines the structure and function of enzymes. " * 10,
    "",
    "What causes cancer?",
]


@pytest.fixture(scope="module")
def exported(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(shutil.copytree(tiny_model, tmp_path_factory.mktemp("onnxenc") / "m"))
    export_onnx(folder, [t for t in TEXTS if t])
    return folder


def test_token_ids_match_transformers_tokenizer(exported: Path) -> None:
    encoder = OnnxEncoder(exported, name="tiny")
    reference = AutoTokenizer.from_pretrained(str(exported))
    feeds = encoder.features(TEXTS)
    expected = reference(TEXTS, padding=True, truncation=True, max_length=64, return_tensors="np")
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        np.testing.assert_array_equal(feeds[name], expected[name], err_msg=name)
    assert feeds["input_ids"].shape[1] == 64  # the long text is cut at max_seq_length


@pytest.mark.parametrize("parallel", [1, 3])
def test_encode_keeps_input_order_and_normalises(exported: Path, parallel: int) -> None:
    encoder = OnnxEncoder(exported, name="tiny", threads=2, parallel=parallel)
    texts = [*TEXTS[::-1], "another text about cells"]
    together = encoder.encode(texts, batch_size=2)
    one_by_one = np.stack([encoder.encode([t])[0] for t in texts])
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    if parallel > 1:  # several batches ran at once on a one-thread session
        assert encoder._lean.get_session_options().intra_op_num_threads == 1
    else:
        assert encoder._lean is None and encoder._pool is None
    assert together.dtype == np.float32 and together.shape == (len(texts), 32)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    assert encoder.encode([]).shape == (0, 32)
    with pytest.raises(ValueError, match="batch_size"):
        encoder.encode(["x"], batch_size=0)


def test_sequential_view_shares_sessions_and_skips_the_pool(exported: Path) -> None:
    encoder = OnnxEncoder(exported, name="tiny", threads=2, parallel=2)
    texts = [*TEXTS, "another text about cells"]
    pooled = encoder.encode(texts, batch_size=1)  # makes the pool before the view
    view = encoder.sequential()
    np.testing.assert_allclose(view.encode(texts, batch_size=1), pooled, atol=1e-5)
    assert view.session is encoder.session and view.parallel == 1 and view._pool is None
    assert encoder.parallel == 2 and encoder._pool is not None  # the original is unchanged


def test_protocol_attributes(exported: Path) -> None:
    encoder = OnnxEncoder(exported, name="tiny", threads=1)
    assert (encoder.name, encoder.backend, encoder.dim) == ("tiny", "onnx", 32)
    assert encoder.model_hash == model_hash(exported)  # onnx/ does not change the model hash
    assert encoder.session.get_session_options().intra_op_num_threads == 1


def test_load_encoder_picks_onnx(exported: Path) -> None:
    assert available_backends(exported) == ["onnx", "torch"]
    encoder = load_encoder(exported)
    assert encoder.backend == "onnx" and isinstance(encoder, OnnxEncoder)


def test_missing_int8_and_stale_export_are_refused(exported: Path, tmp_path: Path) -> None:
    with pytest.raises(AssetError, match="quantize_int8"):
        OnnxEncoder(exported, quantized=True)
    stale = Path(shutil.copytree(exported, tmp_path / "stale"))
    manifest = stale / "onnx" / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "model_hash": "0" * 16}))
    with pytest.raises(AssetError, match="re-export"):
        OnnxEncoder(stale)


@pytest.mark.slow
def test_real_minilm_export_and_int8(tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from distill.compress.quantize import quantize_int8
    from search.assets import resolve_model

    folder = Path(shutil.copytree(resolve_model("all-MiniLM-L6-v2"), tmp_path / "minilm"))
    texts = [t for t in TEXTS if t] + [
        "Vitamin D deficiency is linked to bone loss in older adults.",
        "The mitochondria is the powerhouse of the cell.",
        "word " * 400,  # truncated at 256 tokens by both backends
    ]
    assert export_onnx(folder, texts)["cosine_mean"] >= 0.999
    report = quantize_int8(folder, texts)
    assert report["written"] and report["cosine_mean"] >= 0.99
    assert report["size_mb"] < 0.5 * report["fp32_size_mb"]
    torch_vecs = SentenceTransformer(str(folder), device="cpu").encode(
        texts, normalize_embeddings=True
    )
    for quantized, floor in ((False, 0.9999), (True, 0.98)):
        vecs = OnnxEncoder(folder, quantized=quantized).encode(texts)
        assert np.sum(vecs * torch_vecs, axis=1).min() > floor, quantized
