"""Paired significance of per-query metric differences (scipy's resampling tests)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class PairedTest:
    """Student minus teacher, per query.

    Attributes:
        mean_diff: Mean of (a - b) over queries.
        ci_low: Lower end of the 95 % bootstrap (BCa) interval of the mean difference.
        ci_high: Upper end.
        p_value: Two-sided paired permutation test (sign flips) of mean difference = 0.
        n: Number of paired queries.
    """

    mean_diff: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int


def paired_test(
    a: dict[str, float], b: dict[str, float], *, resamples: int = 10_000, seed: int = 0
) -> PairedTest:
    """Compare two systems' per-query scores on the queries both have.

    Args:
        a: Query id -> score of the system under test (e.g. student nDCG@10).
        b: Query id -> score of the reference (e.g. teacher nDCG@10).

    Raises:
        ValueError: fewer than 2 queries in common.
    """
    common = sorted(set(a) & set(b))
    if len(common) < 2:
        raise ValueError(f"need >= 2 queries scored by both systems, got {len(common)}")
    diff = np.array([a[q] - b[q] for q in common])
    rng = np.random.default_rng(seed)
    if np.allclose(diff, diff[0]):
        return PairedTest(float(diff.mean()), float(diff[0]), float(diff[0]), 1.0, len(common))
    ci = stats.bootstrap(
        (diff,),
        np.mean,
        n_resamples=resamples,
        confidence_level=0.95,
        method="BCa",
        random_state=rng,
    ).confidence_interval
    perm = stats.permutation_test(
        (np.array([a[q] for q in common]), np.array([b[q] for q in common])),
        lambda x, y: np.mean(x - y),
        permutation_type="samples",
        n_resamples=resamples,
        alternative="two-sided",
        random_state=rng,
    )
    return PairedTest(
        float(diff.mean()), float(ci.low), float(ci.high), float(perm.pvalue), len(common)
    )
