"""Options of a static student, parsed from ``--student static[:KEY=VALUE,...]``.

Kept apart from `distill.static` so that parsing a ``--student`` spec imports neither
torch nor model2vec.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

STATIC_PREFIX = "static"
LOSSES = ("cosine", "mse")
DTYPES = ("float16", "float32")


@dataclass(frozen=True)
class StaticOptions:
    """How a static student is distilled (model2vec) and adapted to the corpus.

    Attributes:
        dims: PCA dimensions of the token vectors (model2vec's ``pca_dims``); capped at
            the teacher's width.
        sif: SIF coefficient of model2vec's Zipf-law token weighting in the plain
            distillation (``sif_coefficient``); 0 turns it off.
        adapt: Train the token vectors on the teacher's embeddings of the training
            texts (tokenlearn's recipe); False emits the plain distillation.
        loss: ``cosine`` (`model2vec.train.StaticModelForSimilarity`) or ``mse``
            (`StaticModelForRegression`) to the teacher's pooled embedding, reduced to
            `dims` by PCA and rotated onto the plain model's space.
        lr: Adam learning rate of the adaptation.
        epochs: Most passes over the training texts (early stopping on the held-out
            texts' loss usually ends sooner).
        patience: Held-out checks without improvement before training stops.
        batch: Training batch size.
        reweight: SIF coefficient of the re-weighting by the corpus's own token
            frequencies after training, ``a / (a + p(token))``; 0 turns it off. Kept
            only when it raises validation nDCG@10.
        max_tokens: Tokens of a text the model reads (longer texts are truncated).
        dtype: Precision of the saved token vectors.
    """

    dims: int = 256
    sif: float = 1e-4
    adapt: bool = True
    loss: str = "cosine"
    lr: float = 1e-3
    epochs: int = 30
    patience: int = 5
    batch: int = 64
    reweight: float = 1e-3
    max_tokens: int = 512
    dtype: str = "float16"

    def __post_init__(self) -> None:
        _validate(self)

    @classmethod
    def parse(cls, raw: str) -> StaticOptions:
        """Options from ``KEY=VALUE`` pairs separated by commas (``""``: the defaults).

        Raises:
            ValueError: an unknown key or a bad value; the message names the keys.
        """
        values: dict[str, Any] = {}
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for item in (x.strip() for x in raw.split(",")):
            if not item:
                continue
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or key not in fields:
                raise ValueError(
                    f"--student static:{raw}: {item!r} is not KEY=VALUE with a known key; "
                    f"keys: {', '.join(fields)} (e.g. static:dims=256,loss=cosine)"
                )
            values[key] = _convert(key, value.strip(), type(fields[key].default))
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _convert(key: str, value: str, kind: type) -> Any:
    if kind is bool:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"--student static: {key}={value!r} must be true or false")
    try:
        return kind(value)
    except ValueError:
        noun = {int: "an integer", float: "a number"}.get(kind, kind.__name__)
        raise ValueError(f"--student static: {key}={value!r} must be {noun}") from None


def _validate(o: StaticOptions) -> None:
    checks = [
        (o.dims >= 2, f"dims must be >= 2, got {o.dims}"),
        (0 <= o.sif < 1, f"sif must be in [0, 1), got {o.sif} (1e-4 is model2vec's default)"),
        (0 <= o.reweight < 1, f"reweight must be in [0, 1), got {o.reweight} (0 turns it off)"),
        (o.loss in LOSSES, f"loss must be one of {', '.join(LOSSES)}, got {o.loss!r}"),
        (o.lr > 0, f"lr must be > 0, got {o.lr}"),
        (o.epochs >= 1 and o.patience >= 1, "epochs and patience must be >= 1"),
        (o.batch >= 2, f"batch must be >= 2, got {o.batch}"),
        (o.max_tokens >= 1, f"max_tokens must be >= 1, got {o.max_tokens}"),
        (o.dtype in DTYPES, f"dtype must be one of {', '.join(DTYPES)}, got {o.dtype!r}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(f"--student static: {message}")
