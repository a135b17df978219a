"""Static encoders: a text's vector is the average of its tokens' vectors (model2vec).

No transformer runs: encoding is tokenisation plus a table lookup, so it costs
microseconds a text on a CPU. A static model folder is model2vec's
(``config.json`` with ``"model_type": "model2vec"``, ``model.safetensors``,
``tokenizer.json``) or a sentence-transformers model whose first module is a
``StaticEmbedding``; `search.encoder.load_encoder` picks `StaticEncoder` for both.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from search.assets import model_hash

STATIC_BACKEND = "static"
MODEL_TYPE = "model2vec"
_BATCH = 1024  # texts a call; memory is one row a text, so the caller's batch size is moot


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_static_folder(folder: Path) -> bool:
    """True when `folder` holds a static model (model2vec's layout, or a
    sentence-transformers model whose first module is a ``StaticEmbedding``)."""
    config = _read_json(folder / "config.json")
    if isinstance(config, dict) and config.get("model_type") == MODEL_TYPE:
        return True
    modules = _read_json(folder / "modules.json")
    return (
        isinstance(modules, list)
        and bool(modules)
        and str(modules[0].get("type", "")).endswith("StaticEmbedding")
    )


class StaticEncoder:
    """A model2vec `StaticModel`: mean of the text's token vectors, L2-normalised.

    Args:
        folder: A static model folder (see `is_static_folder`).
        name: Display name of the model.
    """

    backend = STATIC_BACKEND

    def __init__(self, folder: Path, *, name: str | None = None) -> None:
        from model2vec import StaticModel

        self.folder: Path | None = folder
        self.name = name or folder.name
        self.model = StaticModel.from_pretrained(folder, force_download=False)
        self.model_hash = model_hash(folder)
        self.dim = int(self.model.dim)

    @classmethod
    def from_model(cls, model: Any, name: str, model_hash: str = "unsaved") -> StaticEncoder:
        """Wrap an in-memory `StaticModel` (e.g. one being distilled)."""
        self = cls.__new__(cls)
        self.folder, self.name, self.model, self.model_hash = None, name, model, model_hash
        self.dim = int(model.dim)
        return self

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 32, show_progress: bool = False
    ) -> np.ndarray:
        """Embed texts; `batch_size` is accepted for the `Encoder` interface and unused.

        Returns:
            float32 array of shape (len(texts), dim), rows L2-normalised, in input order;
            a text with no token the model knows (e.g. empty) gets a zero row.
        """
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self.model.encode(
            list(texts),
            batch_size=_BATCH,
            normalize=False,  # normalised here in float32: the vectors may be float16
            show_progress_bar=show_progress,
            use_multiprocessing=False,  # no worker processes inside a server or a Dask task
        ).astype(np.float32)
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        return vecs / np.maximum(norms, 1e-12)
