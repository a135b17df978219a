"""Encoders: turn texts into L2-normalised float32 vectors.

`load_encoder` resolves a model name or folder (see `search.assets`) and returns the
fastest artifact the folder holds unless a backend is forced: ONNX int8, then ONNX
fp32 (files under ``onnx/`` written by ``distill``), then torch. A static model folder
(`search.static_encoder`) is encoded by model2vec (``static``), or by
sentence-transformers' ``StaticEmbedding`` when ``torch`` is forced.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from tqdm.auto import tqdm

from search.assets import model_hash, resolve_model
from search.batching import DEFAULT_BATCH_TOKENS, token_batches
from search.devices import Precision, resolve_device
from search.onnx_encoder import FP32_FILE, INT8_FILE, ONNX_DIR, OnnxEncoder
from search.static_encoder import STATIC_BACKEND, StaticEncoder, is_static_folder
from search.types import AssetError

logger = logging.getLogger(__name__)

Backend = Literal["auto", "torch", "onnx", "onnx-int8", "static"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "onnx", "onnx-int8", STATIC_BACKEND)
_DEFAULT_WINDOW = 512  # tokens, for a model that does not say its max_seq_length


class Encoder(Protocol):
    """What the indexer, retriever and evaluation need from a model."""

    name: str
    model_hash: str
    dim: int
    backend: str

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 32, show_progress: bool = False
    ) -> np.ndarray:
        """Embed texts.

        Returns:
            float32 array of shape (len(texts), dim), rows L2-normalised.
        """
        ...


def _offline() -> None:
    # Nothing is downloaded at run time: models come from local folders only.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


class TorchEncoder:
    """A `SentenceTransformer` on the CPU (or `device`), normalising its output.

    Args:
        folder: A sentence-transformers model folder.
        name: Display name of the model.
        device: Torch device.
        batch_tokens: Most padded tokens in one batch (see `search.batching`); None:
            batches are bounded by count only, as `SentenceTransformer.encode` does
            (better on an accelerator, where large batches pay).
        precision: ``fp32``, or ``bf16``: the weights are cast to bfloat16 (on CPUs
            with bf16 units about twice as fast as fp32, and faster than autocast;
            `search.precision` measures whether a model may). Vectors are float32
            either way.
    """

    backend = "torch"

    def __init__(
        self,
        folder: Path,
        *,
        name: str | None = None,
        device: str = "cpu",
        batch_tokens: int | None = DEFAULT_BATCH_TOKENS,
        precision: Precision = "fp32",
    ) -> None:
        _offline()
        self.batch_tokens = batch_tokens
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # "Loading weights" bars are noise on every load

        self.folder: Path | None = folder
        self.name = name or folder.name
        try:
            self.model = SentenceTransformer(str(folder), device=device, local_files_only=True)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise unloadable(folder, "torch", exc) from exc
        except Exception as exc:  # e.g. safetensors' own error type on a cut file
            if type(exc).__module__.split(".")[0] in ("safetensors", "tokenizers"):
                raise unloadable(folder, "torch", exc) from exc
            raise
        self.model_hash = model_hash(folder)
        dim = self.model.get_embedding_dimension()
        if dim is None:
            raise AssetError(f"{folder}: cannot tell the embedding dimension of this model")
        self.dim = int(dim)
        self.precision: Precision = "fp32"
        if precision == "bf16":
            self.to_bf16()

    @classmethod
    def from_model(cls, model: Any, name: str, model_hash: str = "unsaved") -> TorchEncoder:
        """Wrap an in-memory `SentenceTransformer` (e.g. one being trained)."""
        self = cls.__new__(cls)
        self.folder, self.name, self.model, self.model_hash = None, name, model, model_hash
        self.batch_tokens = DEFAULT_BATCH_TOKENS
        self.dim = int(model.get_embedding_dimension())
        self.precision = "bf16" if _dtype_name(model) == "bfloat16" else "fp32"
        return self

    def to_bf16(self) -> None:
        """Cast the model's weights to bfloat16, in place (not undone: cast a copy to
        keep fp32)."""
        import torch

        self.model.to(torch.bfloat16)
        self.precision = "bf16"

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 32, show_progress: bool = False
    ) -> np.ndarray:
        """Embed texts in batches bounded by `batch_size` and `batch_tokens`.

        Returns:
            float32 array of shape (len(texts), dim), rows L2-normalised, in input order.
        """
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        texts = list(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        lengths = self._lengths(texts)
        if lengths is None:  # no tokenizer to count with: bound batches by count only
            batches = token_batches([len(t) for t in texts], batch_size, None)
        else:
            batches = token_batches(lengths, batch_size, self.batch_tokens)
        for rows in tqdm(batches, desc="encoding (torch)", disable=not show_progress):
            out[rows] = self.model.encode(
                [texts[i] for i in rows],
                batch_size=len(rows),
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        if self.precision != "fp32":  # normalised in bf16: to unit length in float32
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    def _lengths(self, texts: list[str]) -> list[int] | None:
        """Tokens of each text as the model reads it (truncated to its window); None
        when batches are bounded by count only or the model has no tokenizer."""
        tokenizer = getattr(self.model, "tokenizer", None)
        if self.batch_tokens is None or not callable(tokenizer):
            return None
        window = self.model.max_seq_length or _DEFAULT_WINDOW
        ids = tokenizer(texts, truncation=True, max_length=window)["input_ids"]
        return [len(row) for row in ids]


def _dtype_name(model: Any) -> str:
    try:
        return str(next(iter(model.parameters())).dtype).removeprefix("torch.")
    except (StopIteration, AttributeError, TypeError):
        return "float32"


def available_backends(folder: Path) -> list[str]:
    """Backends a model folder supports, fastest first: ONNX int8, ONNX, torch; a
    static model folder: static (model2vec), then torch.

    An int8 model is only written when it passed its quality gate, and it encodes
    faster than fp32 ONNX on CPUs even without int8 dot-product instructions and
    with the MatMuls that gate keeps in fp32, so it leads wherever it exists;
    ``--backend onnx`` selects fp32.
    """
    if is_static_folder(folder):
        return [STATIC_BACKEND, "torch"]
    found = []
    if (folder / ONNX_DIR / INT8_FILE).is_file():
        found.append("onnx-int8")
    if (folder / ONNX_DIR / FP32_FILE).is_file():
        found.append("onnx")
    found.append("torch")
    return found


def load_encoder(
    name_or_path: str | Path,
    *,
    backend: Backend = "auto",
    threads: int | None = None,
    device: str | None = None,
    precision: str | None = None,
) -> Encoder:
    """Load an encoder by model name or folder.

    Args:
        name_or_path: A model name known to `search.assets` or a model folder.
        backend: ``auto`` picks the fastest artifact the folder holds
            (ONNX int8 > ONNX > torch; static for a static model); the others force
            one and fail if it is absent.
        threads: onnxruntime intra-op threads of an ONNX encoder (default: every core);
            torch encoders use torch's process-wide setting.
        device: Torch device of a torch encoder (`search.devices.resolve_device`:
            default a CUDA device when one is present, else the CPU); ONNX and static
            encoders run on the CPU.
        precision: Of a torch encoder: ``fp32``, ``bf16`` or ``auto`` (default, or
            ``$DISTILSEARCH_PRECISION``): bf16 where the device has bf16 units and the
            model passes `search.precision`'s check against fp32.

    Raises:
        AssetError: the model cannot be resolved, or the forced backend is absent.
        ValueError: `device` names no device this machine has.
    """
    if backend not in BACKENDS:
        raise AssetError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    folder = resolve_model(name_or_path)
    name = str(name_or_path) if not Path(name_or_path).exists() else folder.name
    choices = available_backends(folder)
    chosen = choices[0] if backend == "auto" else backend
    if chosen not in choices:
        raise AssetError(
            f"{folder} has no {chosen} artifact (has: {', '.join(choices)}); "
            "export one with `distilsearch distill` or pass --backend torch"
        )
    try:
        if chosen == "torch":
            return _torch_encoder(folder, name, resolve_device(device), precision)
        if chosen == STATIC_BACKEND:
            return StaticEncoder(folder, name=name)
        return OnnxEncoder(folder, name=name, quantized=chosen == "onnx-int8", threads=threads)
    except (AssetError, ValueError):
        raise
    except Exception as exc:  # a loader's own error on broken files: name the folder
        raise unloadable(folder, chosen, exc) from exc


def unloadable(folder: Path, backend: str, exc: BaseException) -> AssetError:
    """The error for a model folder whose files its loader cannot read."""
    reason = " ".join(str(exc).split())[:300] or type(exc).__name__
    return AssetError(
        f"{folder}: the {backend} model cannot be loaded ({type(exc).__name__}: {reason}); "
        "the files may be cut or corrupt: copy or export the model again"
    )


def _torch_encoder(folder: Path, name: str, device: str, precision: str | None) -> TorchEncoder:
    """A torch encoder in the precision `search.precision.choose_precision` picks."""
    from search.precision import choose_precision

    encoder = TorchEncoder(folder, name=name, device=device)
    check, bf16 = choose_precision(
        encoder.model, encoder.model_hash, requested=precision, device=device
    )
    if bf16 is not None:
        encoder.model, encoder.precision = bf16, "bf16"
    logger.info("%s encodes in %s (%s)", name, check.precision, check.reason)
    return encoder


def bulk_encoder(encoder: Encoder) -> Encoder:
    """`encoder` for bulk work beside latency-bound queries (a server's upserts).

    An ONNX encoder runs batches in a pool its queries share, where an upsert's many
    batches would queue ahead of theirs; it is given as its sequential view (same
    sessions, no new memory). Other encoders are returned as they are.
    """
    return encoder.sequential() if isinstance(encoder, OnnxEncoder) else encoder
