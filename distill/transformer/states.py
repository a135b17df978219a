"""Token hidden states of a fixed list of texts at some layer boundaries, fp16 on disk.

Layer-local distillation (`distill.transformer.layerwise`) trains one layer at a time on the
states an uncut model produces at the boundaries of the dropped blocks. Those states
are computed once, by one forward pass of the uncut model over the training texts,
and read back for every step, so no full model runs inside the training loop.

Layout of a store folder: ``meta.json`` (what made it: model hash, window, boundaries,
texts hash, token counts), and one ``h{b}.npy`` per boundary ``b`` holding the real
(unpadded) tokens of every text, text after text: float16 ``(total_tokens, hidden)``.
Boundary ``b`` is the hidden state *before* layer ``b`` (0: the embeddings' output,
``num_layers``: the last layer's output), as in transformers' ``hidden_states``.

Filling is resumable: the arrays are written in place as ``.npy`` memory maps under a
temporary name and ``progress.json`` records the batches already written (after the
maps are flushed); a killed pass continues from there, and the finished arrays are
renamed to their final names at the end.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from distill.transformer.schedule import mixed_precision
from search.atomic import atomic_write_text
from search.batching import token_batches

logger = logging.getLogger(__name__)

FILL_BATCH_TOKENS = 4096
"""Padded tokens per batch of the filling pass (forward only, no gradients)."""


def texts_hash(texts: Sequence[str]) -> str:
    """A short hash of an ordered list of texts."""
    digest = hashlib.blake2b(digest_size=12)
    for text in texts:
        digest.update(hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest())
    return digest.hexdigest()


def tokenize(model: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text as `model` (a SentenceTransformer) reads it: its own
    tokenizer, truncated to its ``max_seq_length``, special tokens included."""
    window = int(model.max_seq_length)
    encoded = model.tokenizer(list(texts), truncation=True, max_length=window)
    return [list(row) for row in encoded["input_ids"]]


def pad_ids(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both int64 ``(len(rows), longest)``, right-padded."""
    longest = max(len(r) for r in rows)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


@dataclass
class StateStore:
    """Read side of a filled store.

    Attributes:
        folder: The store folder.
        lengths: Tokens of each text, int64 ``(n_texts,)``.
        offsets: First row of each text in the arrays, int64 ``(n_texts + 1,)``.
        arrays: Boundary -> float16 memory map ``(total_tokens, hidden)``.
    """

    folder: Path
    lengths: np.ndarray
    offsets: np.ndarray
    arrays: dict[int, np.ndarray]

    @classmethod
    def open(cls, folder: Path) -> StateStore:
        meta = json.loads((folder / "meta.json").read_text())
        lengths = np.asarray(meta["lengths"], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        arrays = {int(b): np.load(folder / f"h{b}.npy", mmap_mode="r") for b in meta["boundaries"]}
        return cls(folder, lengths, offsets, arrays)

    def __len__(self) -> int:
        return len(self.lengths)

    def batch(self, boundary: int, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """States of texts `rows` at `boundary`, padded.

        Returns:
            (states float32 ``(len(rows), longest, hidden)``, attention mask int64
            ``(len(rows), longest)``).
        """
        return gather(self.arrays[boundary], self.offsets, self.lengths, rows)


def gather(
    array: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, rows: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad the token rows of texts `rows` out of a ``(total_tokens, hidden)`` array."""
    longest = int(max(lengths[r] for r in rows))
    out = np.zeros((len(rows), longest, array.shape[1]), dtype=np.float32)
    mask = np.zeros((len(rows), longest), dtype=np.int64)
    for i, r in enumerate(rows):
        n = int(lengths[r])
        out[i, :n] = array[offsets[r] : offsets[r] + n]
        mask[i, :n] = 1
    return torch.from_numpy(out), torch.from_numpy(mask)


def scatter(
    array: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, rows: Sequence[int], states: Any
) -> None:
    """Write padded ``(len(rows), longest, hidden)`` states back as real token rows."""
    values = states.detach().float().cpu().numpy() if isinstance(states, torch.Tensor) else states
    for i, r in enumerate(rows):
        n = int(lengths[r])
        array[offsets[r] : offsets[r] + n] = values[i, :n]


PROGRESS = "progress.json"


def _open_arrays(
    folder: Path, key: dict[str, Any], tokens: int, hidden: int
) -> tuple[int, dict[int, np.memmap]]:
    """The temporary memory maps of an unfinished store, one per boundary of `key`, and
    how many batches of them are already written (0 unless `progress.json` records
    batches of a fill with the same key)."""
    done = 0
    progress_path = folder / PROGRESS
    if progress_path.is_file():
        saved = json.loads(progress_path.read_text())
        done = int(saved["batches"]) if saved.get("key") == key else 0
    arrays = {
        b: np.lib.format.open_memmap(
            folder / f"h{b}.tmp.npy",
            mode="r+" if done else "w+",
            dtype=np.float16,
            shape=(tokens, hidden),
        )
        for b in key["boundaries"]
    }
    return done, arrays


def _finish(folder: Path, arrays: dict[int, np.memmap], meta: dict[str, Any]) -> None:
    """Rename the filled maps to their final names, then write ``meta.json`` (the mark
    of a finished store) and drop the progress record."""
    for b, array in arrays.items():
        array.flush()
        os.replace(folder / f"h{b}.tmp.npy", folder / f"h{b}.npy")
    atomic_write_text(folder / "meta.json", json.dumps(meta))
    (folder / PROGRESS).unlink(missing_ok=True)


@dataclass
class _Fill:
    """An unfinished store being written: its memory maps and where texts go."""

    folder: Path
    key: dict[str, Any]
    backbone: Any
    arrays: dict[int, np.memmap]
    offsets: np.ndarray
    lengths: np.ndarray
    pad_id: int

    def batch(self, ids: list[list[int]], rows: list[int]) -> None:
        """Run the backbone on one batch and write its states at every boundary."""
        input_ids, mask = pad_ids(ids, self.pad_id)
        out = self.backbone(
            input_ids=input_ids.to(self.backbone.device),
            attention_mask=mask.to(self.backbone.device),
            output_hidden_states=True,
        )
        for b, array in self.arrays.items():
            scatter(array, self.offsets, self.lengths, rows, out.hidden_states[b])

    def checkpoint(self, batches: int) -> None:
        """Flush the maps, then record that `batches` batches are written."""
        for array in self.arrays.values():
            array.flush()
        record = json.dumps({"key": self.key, "batches": batches})
        atomic_write_text(self.folder / PROGRESS, record)


def fill_store(
    folder: Path,
    model: Any,
    texts: Sequence[str],
    boundaries: Sequence[int],
    *,
    model_hash: str,
    progress: bool = True,
    bf16: bool = False,
) -> StateStore:
    """Run `model` (a SentenceTransformer whose first module is a transformers
    backbone) once over `texts` and keep its hidden states at `boundaries`.

    Reuses a finished store with the same model hash, window, boundaries and texts, and
    resumes an interrupted one.

    Args:
        folder: Where the store lives (created).
        model: The model whose states are kept; it reads its own ``max_seq_length``.
        texts: The texts, in the order rows will be addressed.
        boundaries: Layer boundaries to keep (0 = embeddings' output).
        model_hash: Identity of the model's weights, for the store's key.
        bf16: Run the model under autocast bf16 (CPUs with bf16 units: about twice as
            fast; the states are stored in fp16 either way). Part of the store's key.
    """
    key = {
        "model_hash": model_hash,
        "window": int(model.max_seq_length),
        "boundaries": sorted(set(int(b) for b in boundaries)),
        "texts": texts_hash(texts),
        "n_texts": len(texts),
        "precision": "bf16" if bf16 else "fp32",
    }
    meta_path = folder / "meta.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if {k: meta.get(k) for k in key} == key:
            return StateStore.open(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ids = tokenize(model, texts)
    lengths = np.array([len(r) for r in ids], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    backbone = model[0].auto_model
    done, arrays = _open_arrays(folder, key, int(offsets[-1]), int(backbone.config.hidden_size))
    batches = token_batches(lengths.tolist(), 64, FILL_BATCH_TOKENS)
    pad_id = int(model.tokenizer.pad_token_id or 0)
    backbone.eval()
    initial = sum(len(b) for b in batches[:done])
    bar = tqdm(total=len(texts), initial=initial, desc="states", unit="text", disable=not progress)
    fill = _Fill(folder, key, backbone, arrays, offsets, lengths, pad_id)
    with torch.inference_mode(), mixed_precision(bf16):
        for n, rows in enumerate(batches[done:], start=done):
            fill.batch([ids[r] for r in rows], rows.tolist())
            bar.update(len(rows))
            if (n + 1) % 16 == 0 or n + 1 == len(batches):
                fill.checkpoint(n + 1)
    bar.close()
    _finish(folder, arrays, {**key, "lengths": lengths.tolist()})
    return StateStore.open(folder)
