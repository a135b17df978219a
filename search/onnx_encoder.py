"""An encoder that runs an exported ONNX graph with onnxruntime, without torch.

The graph (written by `distill.compress.export.export_onnx`) holds the whole sentence
pipeline: transformer, pooling, any Dense heads and L2 normalisation, so this
module only tokenises, batches and calls onnxruntime. Files in a model folder::

    onnx/model.onnx        fp32 graph (+ model.onnx.data when weights are external)
    onnx/model_int8.onnx   dynamically quantized int8 graph (optional)
    onnx/manifest.json     what made them: model hash, dim, max_seq_length, checks
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from search.assets import files_hash, model_hash
from search.batching import DEFAULT_BATCH_TOKENS, token_batches
from search.types import AssetError

logger = logging.getLogger(__name__)

ONNX_DIR = "onnx"
FP32_FILE = "model.onnx"
INT8_FILE = "model_int8.onnx"
MANIFEST = "manifest.json"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
_DEFAULT_MAX_LEN = 512


def cpu_count() -> int:
    """CPU cores this process may run on (affinity-aware where the OS tells)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def read_onnx_manifest(folder: Path) -> dict[str, Any]:
    """The ``onnx/manifest.json`` of a model folder, or {} when there is none."""
    path = folder / ONNX_DIR / MANIFEST
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise AssetError(
            f"{path} is not valid JSON ({exc}); re-export with distill.compress.export.export_onnx"
        ) from exc
    return data if isinstance(data, dict) else {}


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def text_settings(folder: Path) -> tuple[int, bool]:
    """(max_seq_length, do_lower_case) as sentence-transformers applies them.

    ``max_seq_length`` comes from ``sentence_bert_config.json``; without it, the
    tokenizer's ``model_max_length`` capped at the model's ``max_position_embeddings``.
    """
    sbert = _read_json(folder / "sentence_bert_config.json")
    max_len = sbert.get("max_seq_length")
    if not isinstance(max_len, int) or max_len <= 0:
        limits = [
            _read_json(folder / "tokenizer_config.json").get("model_max_length"),
            _read_json(folder / "config.json").get("max_position_embeddings"),
        ]
        max_len = min([x for x in limits if isinstance(x, int) and x > 0] or [_DEFAULT_MAX_LEN])
    return int(max_len), bool(sbert.get("do_lower_case", False))


class _Tokenizer:
    """The folder's fast tokenizer (``tokenizer.json``) with truncation and no padding."""

    def __init__(self, folder: Path, max_length: int, lower_case: bool) -> None:
        from tokenizers import Tokenizer, normalizers

        path = folder / "tokenizer.json"
        if not path.is_file():
            raise AssetError(
                f"{folder} has no tokenizer.json; the ONNX encoder needs a fast tokenizer — "
                "save the model with a fast (Rust) tokenizer or use --backend torch"
            )
        self.tok = Tokenizer.from_file(str(path))
        padding = self.tok.padding
        self.pad_id = int(padding["pad_id"]) if padding else self._pad_from_config(folder)
        self.tok.no_padding()
        self.tok.enable_truncation(max_length=max_length)
        if lower_case:  # as sentence-transformers does: a Lowercase normaliser in front
            current = self.tok.normalizer
            steps = [normalizers.Lowercase(), *([current] if current is not None else [])]
            self.tok.normalizer = normalizers.Sequence(steps)

    def _pad_from_config(self, folder: Path) -> int:
        for name in ("special_tokens_map.json", "tokenizer_config.json"):
            pad = _read_json(folder / name).get("pad_token")
            if isinstance(pad, dict):
                pad = pad.get("content")
            if isinstance(pad, str) and (pad_id := self.tok.token_to_id(pad)) is not None:
                return int(pad_id)
        return 0

    def __call__(self, texts: list[str]) -> list[tuple[list[int], list[int]]]:
        return [(e.ids, e.type_ids) for e in self.tok.encode_batch(texts)]


class OnnxEncoder:
    """Embed texts with ``onnx/model.onnx`` (or ``model_int8.onnx``) of a model folder.

    Args:
        folder: A sentence-transformers model folder holding an ``onnx/`` export.
        name: Display name of the model.
        quantized: Use the int8 graph instead of the fp32 one.
        model_file: Run this ONNX file instead of the folder's (used to check a
            candidate export before it is published); tokenizer settings still come
            from `folder`.
        threads: onnxruntime intra-op threads of a call; default: every core this
            process may use.
        parallel: Batches `encode` runs at once when it has several, each on one
            thread (a second, one-thread session, made on first use); default: every
            core. One-thread batches side by side encode more documents per second
            than one batch at a time on every thread: the int8 kernels and the
            non-matmul ops scale poorly across threads within one call.
        batch_tokens: Most padded tokens in one batch (see `search.batching`); None:
            batches are bounded by count only.

    Raises:
        AssetError: the graph is missing, stale (made from other weights), or does not
            take the inputs this encoder feeds.
    """

    def __init__(
        self,
        folder: Path,
        *,
        name: str | None = None,
        quantized: bool = False,
        model_file: Path | None = None,
        threads: int | None = None,
        parallel: int | None = None,
        batch_tokens: int | None = DEFAULT_BATCH_TOKENS,
    ) -> None:
        self.folder = folder
        self.batch_tokens = batch_tokens
        self.name = name or folder.name
        self.backend = "onnx-int8" if quantized else "onnx"
        path = model_file or folder / ONNX_DIR / (INT8_FILE if quantized else FP32_FILE)
        if not path.is_file():
            raise AssetError(
                f"{path} not found; export it with distill.compress.export.export_onnx"
                + (" then distill.compress.quantize.quantize_int8" if quantized else "")
                + " or use --backend torch"
            )
        self.model_hash = model_hash(folder)
        manifest = read_onnx_manifest(folder)
        made_from = manifest.get("model_hash")
        if model_file is None and made_from and made_from != self.model_hash:
            raise AssetError(
                f"{path} was exported from model {made_from}, but {folder} now holds "
                f"{self.model_hash}; re-export with distill.compress.export.export_onnx"
            )
        self.max_seq_length, lower_case = text_settings(folder)
        self.tokenizer = _Tokenizer(folder, self.max_seq_length, lower_case)

        self.path = path
        self.threads = threads or cpu_count()
        self.parallel = max(1, parallel or cpu_count())
        self.session = self._session(self.threads)
        self._lean: Any = self.session if self.threads == 1 else None
        self._pool: ThreadPoolExecutor | None = None
        self._lean_lock = threading.Lock()
        self.inputs = [i.name for i in self.session.get_inputs()]
        unknown = sorted(set(self.inputs) - set(INPUT_NAMES))
        if unknown:
            raise AssetError(
                f"{path} takes inputs {unknown} this encoder cannot feed (it feeds "
                f"{', '.join(INPUT_NAMES)}); re-export with distill.compress.export.export_onnx"
            )
        self.output = self.session.get_outputs()[0].name
        shape = self.session.get_outputs()[0].shape
        dim = shape[-1] if shape and isinstance(shape[-1], int) else manifest.get("dim")
        self.dim = int(dim) if dim else int(self._run(self.tokenizer(["a"])).shape[1])

    @functools.cached_property
    def artifact_hash(self) -> str:
        """Content hash of the ONNX file (and its external weights), for cache keys:
        re-quantizing rewrites model_int8.onnx under the same model hash. Computed on
        first use, so loading an encoder for serving does not hash the file."""
        data = self.path.with_name(self.path.name + ".data")  # weights beside the graph
        return files_hash([self.path, *([data] if data.is_file() else [])], self.path.parent)

    def _session(self, threads: int) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        return ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

    def _parallel(self) -> tuple[Any, ThreadPoolExecutor]:
        """The one-thread session that parallel batches share (ORT runs are thread-safe)
        and the threads that run them, made on first use and kept."""
        with self._lean_lock:
            if self._lean is None:
                self._lean = self._session(1)
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.parallel, thread_name_prefix="onnx")
            return self._lean, self._pool

    def sequential(self) -> OnnxEncoder:
        """A view of this encoder (same sessions, no new memory) that runs its batches
        one after another on the main session instead of in the shared pool.

        For bulk work beside latency-bound queries, e.g. a server's document upserts:
        in the pool, an upsert's dozens of batches would queue ahead of the queries'.
        """
        view = copy.copy(self)
        view.parallel = 1
        view._pool = None
        return view

    def features(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Tokenise and pad texts into the graph's inputs.

        Returns:
            {input name: int64 array (len(texts), longest length in tokens)}, padded
            with the tokenizer's pad id (``attention_mask`` is 0 on padding).
        """
        return self._pad(self.tokenizer(list(texts)))

    def _pad(self, batch: list[tuple[list[int], list[int]]]) -> dict[str, np.ndarray]:
        n, width = len(batch), max(len(ids) for ids, _ in batch)
        arrays = {
            "input_ids": np.full((n, width), self.tokenizer.pad_id, dtype=np.int64),
            "attention_mask": np.zeros((n, width), dtype=np.int64),
            "token_type_ids": np.zeros((n, width), dtype=np.int64),
        }
        for row, (ids, type_ids) in enumerate(batch):
            arrays["input_ids"][row, : len(ids)] = ids
            arrays["attention_mask"][row, : len(ids)] = 1
            arrays["token_type_ids"][row, : len(type_ids)] = type_ids
        return {k: arrays[k] for k in self.inputs}

    def _run(self, batch: list[tuple[list[int], list[int]]], session: Any = None) -> np.ndarray:
        out = (session or self.session).run([self.output], self._pad(batch))[0]
        return np.asarray(out, dtype=np.float32)

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 32, show_progress: bool = False
    ) -> np.ndarray:
        """Embed texts, batching them by token length and returning them in input order.

        Args:
            texts: Strings to embed (queries or ``title + " " + text`` documents).
            batch_size: Most texts per onnxruntime call (long texts go in smaller
                batches: see ``batch_tokens``).
            show_progress: Show a progress bar over batches.

        Returns:
            float32 array of shape (len(texts), dim), rows L2-normalised.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        encoded = self.tokenizer(list(texts))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        lengths = [len(ids) for ids, _ in encoded]
        batches = token_batches(lengths, batch_size, self.batch_tokens)
        bar = tqdm(total=len(batches), desc=f"encoding ({self.backend})", disable=not show_progress)
        with bar:
            if self.parallel > 1 and len(batches) > 1:
                session, pool = self._parallel()
                running = {
                    pool.submit(self._run, [encoded[i] for i in rows], session): rows
                    for rows in batches
                }
                try:
                    for done in as_completed(running):
                        out[running[done]] = done.result()
                        bar.update()
                finally:  # a failure or Ctrl-C leaves no batches running behind it
                    for future in running:
                        future.cancel()
            else:
                for rows in batches:
                    out[rows] = self._run([encoded[i] for i in rows])
                    bar.update()
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)
