"""Where an indexing job's heavy work runs: encoding shards and filling the index.

`indexer.build` plans the work (which documents go into which shard) and hands it to
an `Executor`: `LocalExecutor` runs it in this process, `indexer.dask_engine.DaskEngine`
on a Dask cluster. Both read and write the same shards, so either gives the same index.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import faiss
import numpy as np
from tqdm.auto import tqdm

from indexer.shards import WorkDir, encode_sorted, read_shard, write_shard
from search.embed_cache import EmbeddingCache
from search.encoder import Encoder

__all__ = ["Executor", "LocalExecutor", "Partition", "fill_from_shards"]


@dataclass(frozen=True)
class Partition:
    """Documents to encode into one shard.

    Attributes:
        number: Shard number.
        rows: int64 (m,) doc store rows, consecutive.
        texts: The texts to embed (``title text``), one per row.
    """

    number: int
    rows: np.ndarray
    texts: list[str]


class Executor(Protocol):
    """Where shards are encoded and the index is filled.

    Attributes:
        name: Recorded in the index manifest (``build.engine``).
    """

    name: str

    def encode(
        self, parts: Iterable[Partition], shard_dir: Path, done: Callable[[int], None]
    ) -> None:
        """Encode every partition into its shard; call `done(m)` as each finishes."""
        ...

    def fill(self, index: faiss.Index, work: WorkDir, progress: bool) -> faiss.Index:
        """Add every shard's vectors to the trained, empty `index`; return the filled one."""
        ...


class LocalExecutor:
    """Encode and fill in this process.

    Args:
        encoder: The document encoder.
        batch_size: Texts per forward pass.
        cache: An embedding cache to read and fill (vectors shared with `eval`).
    """

    name = "local"

    def __init__(
        self, encoder: Encoder, *, batch_size: int = 32, cache: EmbeddingCache | None = None
    ) -> None:
        self.encoder = encoder
        self.batch_size = batch_size
        self.cache = cache

    def encode(
        self, parts: Iterable[Partition], shard_dir: Path, done: Callable[[int], None]
    ) -> None:
        for part in parts:
            vecs = encode_sorted(
                self.encoder, part.texts, batch_size=self.batch_size, cache=self.cache
            )
            write_shard(shard_dir, part.number, part.rows, vecs)
            done(len(part.rows))

    def fill(self, index: faiss.Index, work: WorkDir, progress: bool) -> faiss.Index:
        return fill_from_shards(index, work, progress)


def fill_from_shards(index: faiss.Index, work: WorkDir, progress: bool) -> faiss.Index:
    """Add every shard's vectors to `index`, in shard order, in this process."""
    numbers = work.shards()
    for number in tqdm(numbers, desc="adding to index", unit="shard", disable=not progress):
        vecs, ids = read_shard(work.shard_dir, number)
        index.add_with_ids(np.ascontiguousarray(vecs), ids)
    return index
