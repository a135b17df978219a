"""The rule that picks the student to emit (`distill.candidates.choose`), on measured
per-query scores made up to sit on each side of its lines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from distill.candidates import ALPHA, SPEED_TIE, Candidate, choose

QUERIES = [f"q{i}" for i in range(300)]


def scores(mean: float, spread: float = 0.3, seed: int = 0) -> dict[str, float]:
    """Per-query nDCG@10 around `mean` (clipped to [0, 1]), one value per query."""
    rng = np.random.default_rng(seed)
    values = np.clip(mean + spread * rng.standard_normal(len(QUERIES)), 0, 1)
    return dict(zip(QUERIES, values.tolist(), strict=True))


def shifted(base: dict[str, float], delta: float, noise: float, seed: int) -> dict[str, float]:
    """`base` moved by `delta` per query, plus per-query noise of scale `noise`."""
    rng = np.random.default_rng(seed)
    return {q: float(v + delta + noise * rng.standard_normal()) for q, v in base.items()}


def cand(name: str, trained: bool, per_query: dict[str, float], docs_per_s: float) -> Candidate:
    return Candidate(name, trained, Path(name), "onnx-int8", per_query, docs_per_s, 20.0)


TEACHER = scores(0.66, seed=1)
SHIPPED = scores(0.64, seed=2)


def test_a_trained_candidate_needs_a_significant_gain() -> None:
    # +0.003 on average with per-query noise: the sign alone says better, the test not
    slightly = shifted(SHIPPED, 0.003, 0.1, seed=3)
    choice = choose(
        [cand("shipped@256", False, SHIPPED, 70.0), cand("trained@256", True, slightly, 70.0)],
        TEACHER,
        teacher_docs_per_s=4.0,
        min_speedup=15,
    )
    assert np.mean(list(slightly.values())) > np.mean(list(SHIPPED.values()))
    assert choice.emitted == "shipped@256"
    row = next(r for r in choice.candidates if r.name == "trained@256")
    assert row.vs_baseline is not None and row.vs_baseline.p >= ALPHA
    assert "not significant" in row.verdict
    # +0.03 on every query: significant, so the trained student is emitted
    clearly = shifted(SHIPPED, 0.03, 0.01, seed=4)
    choice = choose(
        [cand("shipped@256", False, SHIPPED, 70.0), cand("trained@256", True, clearly, 70.0)],
        TEACHER,
        teacher_docs_per_s=4.0,
        min_speedup=15,
    )
    assert choice.emitted == "trained@256" and "significantly better" in choice.reason


def test_an_untrained_candidate_as_fast_and_better_blocks_a_trained_one() -> None:
    better = shifted(SHIPPED, 0.05, 0.01, seed=5)
    trained = shifted(SHIPPED, 0.03, 0.01, seed=6)  # beats shipped@256 but not shipped@384
    candidates = [
        cand("shipped@256", False, SHIPPED, 70.0),
        cand("shipped@384", False, better, 70.0 * SPEED_TIE + 0.5),  # about as fast
        cand("trained@256", True, trained, 70.0),
    ]
    choice = choose(candidates, TEACHER, teacher_docs_per_s=4.0, min_speedup=15)
    assert choice.emitted == "shipped@384"
    row = next(r for r in choice.candidates if r.name == "trained@256")
    assert "shipped@384" in row.verdict
    # once shipped@384 misses the speed target, the trained one need only beat the
    # untrained candidate left, and it does so significantly
    candidates[1] = cand("shipped@384", False, better, 50.0)  # 12.5x a 4 docs/s teacher
    choice = choose(candidates, TEACHER, teacher_docs_per_s=4.0, min_speedup=15)
    assert choice.emitted == "trained@256"


def test_the_speed_target_decides_who_may_be_emitted() -> None:
    better = shifted(SHIPPED, 0.05, 0.01, seed=7)
    candidates = [
        cand("shipped@256", False, SHIPPED, 64.0),  # 16x a 4 docs/s teacher
        cand("shipped@384", False, better, 44.0),  # 11x: better, but too slow
        cand("static", True, scores(0.55, seed=8), 2000.0),
    ]
    choice = choose(candidates, TEACHER, teacher_docs_per_s=4.0, min_speedup=15)
    assert choice.emitted == "shipped@256"
    rows = {r.name: r for r in choice.candidates}
    assert not rows["shipped@384"].meets_speed and "slower than 15x" in rows["shipped@384"].verdict
    assert rows["shipped@256"].x_teacher == pytest.approx(16.0)
    # a user who needs 100x gets the only candidate that fast
    choice = choose(candidates, TEACHER, teacher_docs_per_s=4.0, min_speedup=100)
    assert choice.emitted == "static"
    # nothing reaches 1000x: the fastest, and the reason says so
    choice = choose(candidates, TEACHER, teacher_docs_per_s=4.0, min_speedup=1000)
    assert choice.emitted == "static" and "no candidate reaches 1000x" in choice.reason


def test_rows_carry_paired_tests_against_the_teacher_and_the_baseline() -> None:
    worse = shifted(SHIPPED, -0.05, 0.01, seed=9)
    choice = choose(
        [cand("shipped@256", False, SHIPPED, 70.0), cand("trained@256", True, worse, 70.0)],
        TEACHER,
        teacher_docs_per_s=4.0,
        min_speedup=15,
        fastest_teacher_docs_per_s=8.0,
    )
    assert choice.emitted == "shipped@256"
    rows = {r.name: r for r in choice.candidates}
    assert rows["trained@256"].vs_baseline is not None
    assert rows["trained@256"].vs_baseline.gain == pytest.approx(-0.05, abs=0.002)
    assert rows["shipped@256"].vs_baseline is None  # it is the baseline
    expected = np.mean(list(SHIPPED.values())) - np.mean(list(TEACHER.values()))
    assert rows["shipped@256"].vs_teacher.gain == pytest.approx(expected, abs=1e-4)
    assert rows["shipped@256"].x_fastest_teacher == pytest.approx(70.0 / 8.0, abs=0.01)
    # --emit trained overrides the rule and the table says what the rule chose
    choice = choose(
        [cand("shipped@256", False, SHIPPED, 70.0), cand("trained@256", True, worse, 70.0)],
        TEACHER,
        teacher_docs_per_s=4.0,
        min_speedup=15,
        forced="trained@256",
    )
    rows = {r.name: r for r in choice.candidates}
    assert choice.emitted == "trained@256" and rows["trained@256"].verdict == "emitted"
    assert rows["shipped@256"].verdict.startswith("the rule's choice")
