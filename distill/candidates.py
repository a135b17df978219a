"""Choosing the student to emit: every candidate measured in the form it would be
served in, on the user's own validation queries, with its speed measured in the same
run, and a rule that never emits a model worse than the one the user would have had
without distilling.

Candidates are the shipped starting model untrained (at its own token window and at
the teacher's), the trained student(s), and a static student. Each is scored on the
``select`` validation set (`distill.gate.validation_set`: queries training never saw)
and timed on the same documents as the fp32 teacher.

The rule (`choose`):

1. Only candidates at least ``min_speedup`` times as fast as the fp32 teacher count
   (none: the fastest is emitted, and the reason says so).
2. The baseline is the best untrained candidate among them: what the user gets
   without distilling.
3. A trained candidate may replace it only when (a) no untrained candidate at least
   about as fast (`SPEED_TIE`) scores higher, and (b) its paired test against the
   baseline finds a gain (mean > 0, permutation p < `ALPHA`). Validation differences
   of a few thousandths are inside the noise of a few hundred queries and have
   turned negative on test queries, so the shipped model is preferred unless the
   gain is significant.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import JsonValue

from distill.report import CandidateRow, Choice, PairedGain
from search.encoder import Encoder
from search.significance import paired_test

logger = logging.getLogger(__name__)

SPEED_SAMPLE = 96
"""Documents every speed of a run is measured on (`distill.setup.speed_sample`)."""
SPEED_TIE = 0.9
"""Speeds within 10 % count as equal: two models of one architecture differ by noise."""
ALPHA = 0.05
"""Significance a trained candidate's gain over the baseline must reach."""


@dataclass
class Candidate:
    """One model that could be emitted, measured as it would be served.

    Attributes:
        name: e.g. ``shipped@256``, ``trained@256``, ``static``.
        trained: Made by this run (trained or distilled); False for the shipped model.
        folder: Its model folder (with ``onnx/`` when exported).
        backend: The form it is served in (``onnx-int8``, ``onnx``, ``torch``,
            ``static``).
        per_query: nDCG@10 of each ``select`` validation query.
        docs_per_s: Its served form's documents a second on the speed sample.
        size_mb: Size of the served artifact.
        window: Its token window (None for a static model).
        tune: Its nDCG@10 on the ``tune`` set, when measured (chooses the window to
            train at).
        facts: What made it (stages, compression), for the report.
    """

    name: str
    trained: bool
    folder: Path
    backend: str
    per_query: dict[str, float]
    docs_per_s: float
    size_mb: float
    window: int | None = None
    tune: float | None = None
    facts: dict[str, JsonValue] = field(default_factory=dict)

    @property
    def score(self) -> float:
        return float(np.mean(list(self.per_query.values()))) if self.per_query else 0.0


def docs_per_second(encoder: Encoder, texts: Sequence[str], repeats: int = 3) -> float:
    """Documents a second of `encoder` over `texts`: the best of `repeats` passes after a
    warm-up call, as the encoder batches them (the best pass is the one least
    disturbed by anything else the machine did)."""
    encoder.encode(list(texts[:8]))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        encoder.encode(list(texts))
        best = min(best, time.perf_counter() - t0)
    return len(texts) / best


def _gain(a: dict[str, float], b: dict[str, float]) -> PairedGain:
    test = paired_test(a, b)
    return PairedGain(
        gain=round(test.mean_diff, 4),
        ci95=(round(test.ci_low, 4), round(test.ci_high, 4)),
        p=round(test.p_value, 4),
    )


def choose(
    candidates: Sequence[Candidate],
    teacher: dict[str, float],
    teacher_docs_per_s: float,
    min_speedup: float,
    fastest_teacher_docs_per_s: float | None = None,
    forced: str | None = None,
) -> Choice:
    """Apply the rule of this module; return the choice with a row per candidate.

    Args:
        candidates: Measured candidates (at least one).
        teacher: The teacher's nDCG@10 of each ``select`` query.
        teacher_docs_per_s: The fp32 teacher's documents a second on the same sample.
        min_speedup: Least speed, in multiples of `teacher_docs_per_s`.
        fastest_teacher_docs_per_s: The teacher's rate in its fastest form measured
            here (e.g. bf16), for the second ratio of each row.
        forced: Emit this candidate whatever the rule says (``--emit trained``); the
            rows still say what the rule would have done.

    Raises:
        ValueError: no candidates.
    """
    if not candidates:
        raise ValueError("no candidates to choose from")
    fast = [c for c in candidates if c.docs_per_s >= min_speedup * teacher_docs_per_s]
    untrained = sorted(
        (c for c in fast if not c.trained), key=lambda c: (c.score, c.docs_per_s), reverse=True
    )
    base = untrained[0] if untrained else None
    verdicts: dict[str, str] = {}
    winner, reason = _pick(candidates, fast, base, verdicts, min_speedup)
    if forced is not None and forced != winner.name:
        verdicts[winner.name] = f"the rule's choice ({reason})"
        winner = next(c for c in candidates if c.name == forced)
        reason = f"forced by --emit; {verdicts[winner.name] or 'the rule accepted it too'}"
    rows = [
        _row(c, teacher, base, teacher_docs_per_s, fastest_teacher_docs_per_s, min_speedup)
        for c in candidates
    ]
    for row in rows:
        row.verdict = "emitted" if row.name == winner.name else verdicts.get(row.name, "")
    return Choice(emitted=winner.name, reason=reason, candidates=rows)


def _pick(
    candidates: Sequence[Candidate],
    fast: list[Candidate],
    base: Candidate | None,
    verdicts: dict[str, str],
    min_speedup: float,
) -> tuple[Candidate, str]:
    """The candidate to emit and why; `verdicts` gets why each other one lost."""
    if not fast:
        winner = max(candidates, key=lambda c: c.docs_per_s)
        return winner, f"no candidate reaches {min_speedup:g}x the fp32 teacher; the fastest"
    for c in candidates:
        if c not in fast:
            verdicts[c.name] = f"slower than {min_speedup:g}x the teacher"
    best: Candidate | None = None
    for c in sorted((c for c in fast if c.trained), key=lambda c: c.score, reverse=True):
        verdict = _trained_verdict(c, fast, base)
        verdicts[c.name] = verdict
        if not verdict and best is None:
            best = c
    if best is not None:
        gain = _gain(best.per_query, base.per_query) if base else None
        facts = f" by {gain.gain:+.4f} (p {gain.p:.3f})" if gain else ""
        return best, f"trained and significantly better than the untrained baseline{facts}"
    assert base is not None  # fast is not empty and holds no acceptable trained one
    for c in fast:
        if not c.trained and c is not base:
            verdicts[c.name] = "untrained, below the baseline"
    return base, (
        f"the best untrained candidate at >= {min_speedup:g}x the teacher; no trained "
        "candidate beat it significantly on the validation queries"
    )


def _trained_verdict(c: Candidate, fast: list[Candidate], base: Candidate | None) -> str:
    """Why trained candidate `c` may not be emitted ("" when it may)."""
    rivals = [
        u
        for u in fast
        if not u.trained and u.docs_per_s >= SPEED_TIE * c.docs_per_s and u.score > c.score
    ]
    if rivals:
        return f"untrained {rivals[0].name}, as fast or faster, scores higher"
    if base is None:
        return ""
    gain = _gain(c.per_query, base.per_query)
    if gain.gain > 0 and gain.p < ALPHA:
        return ""
    if gain.gain <= 0:
        return f"scores below {base.name} ({gain.gain:+.4f}, p {gain.p:.3f})"
    return f"gain over {base.name} {gain.gain:+.4f} is not significant (p {gain.p:.3f})"


def _row(
    c: Candidate,
    teacher: dict[str, float],
    base: Candidate | None,
    teacher_rate: float,
    fastest_rate: float | None,
    min_speedup: float,
) -> CandidateRow:
    return CandidateRow(
        name=c.name,
        trained=c.trained,
        backend=c.backend,
        window=c.window,
        ndcg10=round(c.score, 4),
        tune_ndcg10=None if c.tune is None else round(c.tune, 4),
        docs_per_s=round(c.docs_per_s, 2),
        x_teacher=round(c.docs_per_s / teacher_rate, 2),
        x_fastest_teacher=round(c.docs_per_s / fastest_rate, 2) if fastest_rate else None,
        meets_speed=c.docs_per_s >= min_speedup * teacher_rate,
        size_mb=round(c.size_mb, 1),
        vs_teacher=_gain(c.per_query, teacher),
        vs_baseline=None if base is None or base is c else _gain(c.per_query, base.per_query),
        facts=c.facts,
    )
