import numpy as np
import pytest

from distill.targets import fidelity, fit_target_map


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_equal_dims_keep_the_teacher() -> None:
    t = _unit(np.random.default_rng(0).normal(size=(50, 8)))
    m = fit_target_map(t, t)
    np.testing.assert_allclose(m.apply(t), t, atol=1e-6)
    assert m.explained == 1.0


def test_recovers_a_rotated_low_rank_teacher() -> None:
    rng = np.random.default_rng(1)
    # A teacher whose embeddings live in a 4-d subspace of 8 dims...
    low = _unit(rng.normal(size=(200, 4)))
    basis, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    teacher = low @ basis[:4]
    # ...and a student that sees the same geometry in its own rotated 4-d space.
    rot, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    student = low @ rot
    m = fit_target_map(teacher, student)
    assert m.explained == pytest.approx(1.0)
    np.testing.assert_allclose(m.apply(teacher), student, atol=1e-6)
    assert fidelity(student, m.apply(teacher))["cosine"] == pytest.approx(1.0)


def test_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="paired"):
        fit_target_map(np.ones((3, 4)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="wider"):
        fit_target_map(np.ones((3, 4)), np.ones((3, 6)))


def test_fidelity_by_hand() -> None:
    a = np.array([[1.0, 0.0], [0.0, 1.0]])
    b = np.array([[1.0, 0.0], [1.0, 0.0]])
    got = fidelity(a, b)
    assert got["cosine"] == pytest.approx(0.5)
    assert got["mse"] == pytest.approx(0.5)
