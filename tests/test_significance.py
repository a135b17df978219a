import numpy as np
import pytest

from search.significance import paired_test


def test_identical_systems_are_not_different() -> None:
    scores = {str(i): float(i % 7) / 7 for i in range(50)}
    got = paired_test(scores, scores, resamples=999)
    assert got.mean_diff == 0 and got.p_value == 1.0 and got.n == 50


def test_a_clear_improvement_is_significant_and_the_interval_holds_it() -> None:
    rng = np.random.default_rng(0)
    b = {str(i): float(x) for i, x in enumerate(rng.uniform(0, 0.8, 200))}
    a = {q: v + 0.1 + float(rng.normal(0, 0.02)) for q, v in b.items()}
    got = paired_test(a, b, resamples=2000)
    assert got.p_value < 0.01
    assert got.ci_low < 0.1 < got.ci_high and got.mean_diff == pytest.approx(0.1, abs=0.01)


def test_noise_is_not_significant() -> None:
    rng = np.random.default_rng(1)
    b = {str(i): float(x) for i, x in enumerate(rng.uniform(0, 1, 100))}
    a = {q: float(np.clip(v + rng.normal(0, 0.05), 0, 1)) for q, v in b.items()}
    got = paired_test(a, b, resamples=2000)
    assert got.p_value > 0.05 and got.ci_low < 0 < got.ci_high


def test_needs_common_queries() -> None:
    with pytest.raises(ValueError, match="need >= 2 queries"):
        paired_test({"a": 1.0}, {"b": 1.0})
