"""Whether a torch model may encode in bf16: measured against fp32 before anything
relies on it.

On CPUs with bf16 matrix units (`search.devices.bf16_units`) a model whose weights are
cast to bfloat16 encodes about twice as fast as in fp32. Its vectors differ from the
fp32 ones by rounding only, but that is a claim about a model, so it is checked: the
same texts are encoded both ways, and bf16 is used only when the vectors agree
(`MIN_COSINE_MEAN`, `MIN_COSINE`) and, where a retrieval check is given, nDCG@10 does
not drop by more than `MAX_NDCG_DROP`. A passed check is cached on disk by model,
texts, torch version and CPU unit, so it runs once per machine and model.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from search.assets import cache_dir
from search.atomic import atomic_write_text
from search.devices import Precision, bf16_units, resolve_precision
from search.encoder import Encoder, TorchEncoder

logger = logging.getLogger(__name__)

MIN_COSINE_MEAN = 0.9995
"""Least mean cosine between bf16 and fp32 vectors of the check texts."""
MIN_COSINE = 0.995
"""Least cosine of any one check text."""
MAX_NDCG_DROP = 0.005
"""Largest drop of nDCG@10 (absolute) from fp32 to bf16 on the retrieval check."""

PROBE_TEXTS = (
    "what lowers blood pressure",
    "how do vaccines train the immune system",
    "best way to store fresh herbs",
    "symptoms of vitamin D deficiency in adults",
    "Who wrote the first computer program?",
    "rust borrow checker lifetime error",
    "Tidal forces arise because the gravitational pull of the Moon is stronger on the "
    "near side of the Earth than on the far side, stretching the oceans into two bulges.",
    "The committee approved the budget after a long debate about funding for public "
    "transport, schools and the renovation of the old town hall.",
    "Mitochondria produce most of the cell's supply of adenosine triphosphate, used as "
    "a source of chemical energy, and they also take part in signalling, cellular "
    "differentiation and cell death, as well as the control of the cell cycle and growth.",
    "In a randomized controlled trial of 1,200 patients with type 2 diabetes, the "
    "addition of the drug to standard therapy reduced HbA1c by 0.8 percentage points "
    "over 24 weeks compared with placebo, with no increase in hypoglycaemic events. "
    "Adverse events were mostly gastrointestinal and resolved within the first month. "
    "The authors conclude that the drug is an effective second-line option, although "
    "long-term cardiovascular outcomes remain to be established in larger studies.",
    "Photosynthesis converts light energy into chemical energy stored in glucose. In "
    "the light-dependent reactions, water is split and oxygen is released; in the "
    "Calvin cycle, carbon dioxide is fixed into three-carbon sugars using ATP and NADPH. "
    "Plants in hot, dry climates use C4 or CAM pathways to limit water loss while "
    "keeping carbon fixation efficient, which changes how their leaves are built.",
    "The 1998 final was decided on penalties after a goalless draw; the home side's "
    "keeper saved two spot kicks and was carried off the pitch by the fans.",
)
"""Texts of several kinds and lengths the generic check encodes both ways."""


@dataclass(frozen=True)
class PrecisionCheck:
    """What the check measured and decided.

    Attributes:
        precision: The precision to use.
        units: The CPU's bf16 unit (its flag), or None.
        passed: bf16 met the thresholds (False also when it was not measured).
        texts: Texts encoded both ways.
        cosine_mean, cosine_min: Agreement of bf16 with fp32 vectors.
        ndcg_fp32, ndcg_bf16: The retrieval check's nDCG@10 each way (None: no check).
        fp32_docs_per_s, bf16_docs_per_s: Encoding speed on the check texts.
        reason: Why `precision` was chosen, with the numbers.
    """

    precision: Precision
    units: str | None
    passed: bool = False
    texts: int = 0
    cosine_mean: float | None = None
    cosine_min: float | None = None
    ndcg_fp32: float | None = None
    ndcg_bf16: float | None = None
    fp32_docs_per_s: float | None = None
    bf16_docs_per_s: float | None = None
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


Judge = Callable[[Encoder], float]
"""nDCG@10 of an encoder on some judged queries (higher is better)."""


def _timed(encoder: TorchEncoder, texts: Sequence[str]) -> tuple[np.ndarray, float]:
    encoder.encode(texts[:2])  # warm-up
    t0 = time.perf_counter()
    vecs = encoder.encode(texts, show_progress=len(texts) > 32)
    return vecs, len(texts) / max(time.perf_counter() - t0, 1e-9)


def measure_bf16(
    model: Any, texts: Sequence[str], judge: Judge | None = None, *, forced: bool = False
) -> tuple[PrecisionCheck, Any]:
    """Encode `texts` with `model` (an fp32 `SentenceTransformer`, not modified) and
    with a bf16 copy; decide whether the copy may be used.

    Args:
        judge: A retrieval check run both ways (e.g. nDCG@10 on validation queries).
        forced: bf16 was asked for: use it even if the check fails (with a warning).

    Returns:
        The check, and the bf16 copy (None when fp32 is to be used).
    """
    import torch

    fp32 = TorchEncoder.from_model(model, "fp32")
    bf16 = TorchEncoder.from_model(copy.deepcopy(model).to(torch.bfloat16), "bf16")
    a, fp32_rate = _timed(fp32, texts)
    b, bf16_rate = _timed(bf16, texts)
    cos = (a * b).sum(axis=1)
    ndcg = (judge(fp32), judge(bf16)) if judge is not None else (None, None)
    facts = (
        f"bf16 vs fp32 cosine mean {cos.mean():.5f}, min {cos.min():.5f} on {len(texts)} texts"
        + (f"; nDCG@10 {ndcg[1]:.4f} vs {ndcg[0]:.4f}" if ndcg[0] is not None else "")
        + f"; {bf16_rate / fp32_rate:.2f}x the fp32 speed"
    )
    drop = (ndcg[0] - ndcg[1]) if ndcg[0] is not None and ndcg[1] is not None else 0.0
    passed = cos.mean() >= MIN_COSINE_MEAN and cos.min() >= MIN_COSINE and drop <= MAX_NDCG_DROP
    if not passed and forced:
        logger.warning("bf16 was asked for although its check failed: %s", facts)
    use = passed or forced
    check = PrecisionCheck(
        precision="bf16" if use else "fp32",
        units=bf16_units(),
        passed=bool(passed),
        texts=len(texts),
        cosine_mean=round(float(cos.mean()), 6),
        cosine_min=round(float(cos.min()), 6),
        ndcg_fp32=None if ndcg[0] is None else round(ndcg[0], 4),
        ndcg_bf16=None if ndcg[1] is None else round(ndcg[1], 4),
        fp32_docs_per_s=round(fp32_rate, 2),
        bf16_docs_per_s=round(bf16_rate, 2),
        reason=("passed: " if passed else "failed: ") + facts,
    )
    return check, bf16.model if use else None


def choose_precision(
    model: Any,
    model_hash: str,
    *,
    requested: str | None = None,
    device: str = "cpu",
    texts: Sequence[str] = PROBE_TEXTS,
    judge: Judge | None = None,
    key: str = "",
) -> tuple[PrecisionCheck, Any]:
    """The precision `model` (fp32, not modified) should encode in here, and the bf16
    copy when that is bf16.

    fp32 when asked for or when the device has no bf16 units; else the outcome of
    `measure_bf16`, read from the cache when this model, these texts (`key` names any
    data the judge reads), this torch and this CPU unit were checked before.

    Raises:
        ValueError: `requested` is not auto, fp32 or bf16.
    """
    import torch

    wanted = resolve_precision(requested, device)
    explicit = (requested or "auto") != "auto"
    units = bf16_units()
    if wanted == "fp32":
        why = "asked for fp32" if explicit else "no bf16 units on this device"
        return PrecisionCheck("fp32", units, reason=why), None
    path = _cache_path(model_hash, texts, key, torch.__version__, units or device)
    saved = _read(path)
    if saved is not None:  # measured before: decide again, for this request
        use = saved.passed or explicit
        check = dataclasses.replace(saved, precision="bf16" if use else "fp32")
        return check, copy.deepcopy(model).to(torch.bfloat16) if use else None
    logger.info(
        "checking bf16 against fp32 on %d texts%s (once per model and machine)",
        len(texts),
        " and a retrieval check" if judge else "",
    )
    check, bf16 = measure_bf16(model, texts, judge, forced=explicit)
    atomic_write_text(path, json.dumps(check.as_dict()))
    logger.info("precision of %s: %s (%s)", model_hash[:12], check.precision, check.reason)
    return check, bf16


def _cache_path(model_hash: str, texts: Sequence[str], key: str, *parts: str) -> Path:
    digest = hashlib.blake2b(digest_size=10)
    for part in (model_hash, key, *parts, *texts):
        digest.update(part.encode("utf-8") + b"\0")
    return cache_dir() / "precision" / f"{digest.hexdigest()}.json"


def _read(path: Path) -> PrecisionCheck | None:
    try:
        return PrecisionCheck(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
