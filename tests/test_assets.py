from pathlib import Path

import numpy as np
import pytest

from search.assets import (
    MINILM_SHA256,
    TEACHER_SHA256,
    model_hash,
    resolve_model,
    sha256_file,
    verify_sha256,
)
from search.types import AssetError


def test_unknown_name_says_what_to_pass() -> None:
    with pytest.raises(AssetError, match=r"unknown model 'no-such-model'.*local model folder"):
        resolve_model("no-such-model")


def test_folder_that_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(AssetError, match="not a sentence-transformers model folder"):
        resolve_model(tmp_path)


def test_corrupt_file_is_refused_with_the_fix(tmp_path: Path) -> None:
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"not the weights")
    with pytest.raises(AssetError, match=r"corrupt or wrong version.*fix: reinstall"):
        verify_sha256(bad, TEACHER_SHA256, "teacher", "reinstall")
    with pytest.raises(AssetError, match="missing"):
        verify_sha256(tmp_path / "absent", TEACHER_SHA256, "teacher", "reinstall")


def test_model_hash_changes_with_weights_not_with_reports(tiny_model: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "m"
    shutil.copytree(tiny_model, copy)
    before = model_hash(copy)
    (copy / "README.md").write_text("a card")
    (copy / "distill_report.json").write_text("{}")
    assert model_hash(copy) == before
    (copy / "config_sentence_transformers.json").write_text('{"prompts": {}}')
    assert model_hash(copy) != before


@pytest.mark.slow
def test_real_assets_resolve_and_verify() -> None:
    teacher = resolve_model("all-mpnet-base-v2")
    assert sha256_file(teacher / "model.safetensors") == TEACHER_SHA256
    minilm = resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    assert sha256_file(minilm / "model.safetensors") == MINILM_SHA256


@pytest.mark.slow
def test_teacher_encoder_equals_sentence_transformer_on_same_folder() -> None:
    from sentence_transformers import SentenceTransformer

    from search.encoder import load_encoder

    texts = ["Aspirin lowers the risk of heart attack.", "BRCA1 mutations raise cancer risk."]
    ours = load_encoder("all-mpnet-base-v2", backend="torch", precision="fp32")
    theirs = SentenceTransformer(str(resolve_model("all-mpnet-base-v2")), device="cpu")
    assert ours.dim == 768
    expected = theirs.encode(texts, normalize_embeddings=True)
    np.testing.assert_allclose(ours.encode(texts), expected, atol=1e-5)
