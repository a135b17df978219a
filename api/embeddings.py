"""What ``POST /v1/embeddings`` adds to an encoder: token counts of texts as the model
reads them (OpenAI's ``usage``), and vectors written as OpenAI's embeddings API writes
them (a list of floats, or base64 of little-endian float32 bytes).

Each counter tokenizes with a private copy of the model's fast tokenizer: a fast
tokenizer's truncation and padding settings are state, which the encoder changes as
it encodes, and a tokenizer whose state changes while another thread tokenizes with
it fails ("Already borrowed"). An ONNX encoder's tokenizer is set once and only
read, so it is used as it is.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from api.schemas import EncodingFormat
from search.encoder import Encoder, TorchEncoder
from search.onnx_encoder import OnnxEncoder
from search.static_encoder import StaticEncoder

__all__ = ["TokenCounter", "encode_vectors", "to_base64", "token_counter"]

TokenCounter = Callable[[Sequence[str]], list[int]]
"""Texts -> the number of tokens the model reads of each (special tokens included,
cut to the model's window)."""


def token_counter(encoder: Encoder) -> TokenCounter:
    """How many tokens `encoder` reads of each text, as it encodes them.

    Torch and ONNX encoders count their tokenizer's ids with special tokens, cut to the
    model's window (``max_seq_length``); a static encoder counts the ids it averages
    (no special tokens, unknown tokens left out). An encoder of another kind, or a
    torch model without a fast tokenizer, counts whitespace-separated words.

    Returns:
        A function safe to call from several threads at once.
    """
    if isinstance(encoder, OnnxEncoder):
        tokenizer = encoder.tokenizer
        return lambda texts: [len(ids) for ids, _ in tokenizer(list(texts))]
    if isinstance(encoder, TorchEncoder):
        return _torch_counter(encoder.model)
    if isinstance(encoder, StaticEncoder):
        return _static_counter(encoder.model)
    return _words


def _words(texts: Sequence[str]) -> list[int]:
    return [len(text.split()) for text in texts]


def _copy(tokenizer: Any) -> Any:
    """A private copy of a `tokenizers.Tokenizer`."""
    from tokenizers import Tokenizer

    return Tokenizer.from_str(tokenizer.to_str())


def _torch_counter(model: Any) -> TokenCounter:
    """Counts of a `SentenceTransformer`: its first module's tokenizer, cut to its
    ``max_seq_length``, lower-casing first where the module does."""
    backend = getattr(getattr(model, "tokenizer", None), "backend_tokenizer", None)
    if backend is None:
        return _words
    tokenizer = _copy(backend)
    tokenizer.no_padding()
    if model.max_seq_length:
        tokenizer.enable_truncation(max_length=int(model.max_seq_length))
    lower = bool(getattr(model[0], "do_lower_case", False))

    def count(texts: Sequence[str]) -> list[int]:
        batch = [t.strip().lower() if lower else t.strip() for t in texts]
        return [len(e.ids) for e in tokenizer.encode_batch(batch)]

    return count


def _static_counter(model: Any) -> TokenCounter:
    """Counts of a model2vec `StaticModel`: the ids it averages (as its ``tokenize``),
    at most ``max_length``."""
    tokenizer = _copy(model.tokenizer)
    unk = getattr(model, "unk_token_id", None)
    window = getattr(model, "max_length", None)

    def count(texts: Sequence[str]) -> list[int]:
        encoded = tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)
        counts = [sum(1 for i in e.ids if i != unk) for e in encoded]
        return [min(n, window) for n in counts] if window else counts

    return count


def to_base64(vector: np.ndarray) -> str:
    """`vector` as OpenAI's ``encoding_format="base64"`` writes it: its little-endian
    float32 bytes, base64-encoded (what the OpenAI client decodes with
    ``np.frombuffer(base64.b64decode(s), dtype="float32")``)."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def encode_vectors(vectors: np.ndarray, fmt: EncodingFormat) -> list[list[float]] | list[str]:
    """Rows of float32 (n, dim) `vectors` as OpenAI's API writes them in format `fmt`."""
    if fmt == "base64":
        return [to_base64(row) for row in vectors]
    return [row.tolist() for row in np.asarray(vectors, dtype=np.float32)]
