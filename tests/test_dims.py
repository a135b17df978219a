"""Fewer dimensions: PCA maths by hand, the saved Dense + Normalize student, its ONNX export."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from distill.compress.dims import pca_projection, reduce_dims, similarity_agreement
from distill.compress.export import export_onnx
from search.assets import model_hash
from search.onnx_encoder import OnnxEncoder

_WORDS = (  # noqa: SIM905
    "cell protein cancer gene virus drug patient brain heart study trial risk dose blood "
    "immune cats dogs code compiler python language river mountain music film"
).split()


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 25))) for _ in range(n)]


def test_pca_keeps_a_low_rank_gram_matrix_exactly() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3)) @ rng.normal(size=(3, 10))  # rank 3 in 10-d
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    weight, bias, energy = pca_projection(x, 3)
    assert bias is None and energy == pytest.approx(1.0)
    np.testing.assert_allclose(weight @ weight.T, np.eye(3), atol=1e-5)
    y = x @ weight.T
    np.testing.assert_allclose(y @ y.T, x @ x.T, atol=1e-5)  # inner products unchanged
    assert np.all(weight[np.arange(3), np.abs(weight).argmax(axis=1)] > 0)  # sign fixed


def test_pca_centred_bias_and_energy_by_hand() -> None:
    x = np.array([[3.0, 1.0], [5.0, 1.0], [4.0, 1.0]])  # mean (4, 1); spread along axis 0 only
    weight, bias, energy = pca_projection(x, 1, center=True)
    np.testing.assert_allclose(weight, [[1.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(bias, [-4.0], atol=1e-6)  # -W @ mean
    assert energy == pytest.approx(1.0)
    weight, bias, energy = pca_projection(x, 1)  # uncentred: top eigenvalue of X^T X
    # X^T X = [[50, 12], [12, 3]]: eigenvalues (53 ± sqrt(47² + 4·12²)) / 2, trace 53.
    assert bias is None and energy == pytest.approx((53 + np.sqrt(2785)) / 2 / 53)


def test_pca_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="at least 4 texts"):
        pca_projection(np.ones((3, 8)), 4)
    with pytest.raises(ValueError, match=r"dim must be in \[1, 7\]"):
        pca_projection(np.ones((30, 8)), 8)


def test_similarity_agreement_identity_and_damage() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    same = similarity_agreement(x, x)
    assert same == pytest.approx(
        {"pairwise_cosine_corr": 1.0, "pairwise_cosine_mae": 0.0, "neighbour_overlap@10": 1.0}
    )
    noise = rng.normal(size=(20, 8))
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    worse = similarity_agreement(x, noise)
    assert worse["pairwise_cosine_corr"] < 0.5 and worse["neighbour_overlap@10"] < 0.9


@pytest.mark.parametrize("center", [False, True])
def test_reduce_dims_saves_a_working_smaller_student(
    tiny_model: Path, tmp_path: Path, center: bool
) -> None:
    before = model_hash(tiny_model)
    out = tmp_path / "tiny-d8"
    texts = _texts(60)
    report = reduce_dims(tiny_model, out, 8, texts, center=center)
    assert model_hash(tiny_model) == before  # the source is untouched
    assert report["dim"] == 8 and report["source_dim"] == 32 and report["center"] is center
    assert report["num_fit_texts"] == 48 and report["num_heldout_texts"] == 12
    assert report["fit_cosine"] > 0.9999  # the saved Dense does what the PCA says
    assert 0 < report["energy_kept"] <= 1 and report["pairwise_cosine_corr"] > 0.5
    assert report["model_hash"] == model_hash(out) != before

    model = SentenceTransformer(str(out), device="cpu")
    assert [type(m).__name__ for m in model][-3:] == ["Normalize", "Dense", "Normalize"]
    vecs = model.encode(_texts(5, seed=1), convert_to_numpy=True)
    assert vecs.shape == (5, 8)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


def test_reduced_student_exports_to_onnx(tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiny-d8"
    reduce_dims(tiny_model, out, 8, _texts(40))
    report = export_onnx(out, _texts(8, seed=2))
    assert report["heads"] == ["Normalize", "Dense", "Normalize"] and report["dim"] == 8
    assert report["cosine_mean"] >= 0.999
    assert OnnxEncoder(out).encode(["cells"]).shape == (1, 8)


def test_reduce_dims_evaluates_both_and_refuses_bad_input(tiny_model: Path, tmp_path: Path) -> None:
    dims_seen: list[int] = []

    def evaluate(encoder: object) -> float:
        dims_seen.append(encoder.dim)  # type: ignore[attr-defined]
        return 0.5 if encoder.dim == 32 else 0.45  # type: ignore[attr-defined]

    out = tmp_path / "d4"
    report = reduce_dims(tiny_model, out, 4, _texts(20), evaluate=evaluate)
    assert dims_seen == [32, 4] and report["relative_drop"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="exists; pass overwrite=True"):
        reduce_dims(tiny_model, out, 4, _texts(20))
    with pytest.raises(ValueError, match="needs at least 16 fitting texts, got 8"):
        reduce_dims(tiny_model, tmp_path / "d16", 16, _texts(10))
    assert not (tmp_path / "d16").exists()
