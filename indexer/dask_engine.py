"""Run an indexing job on a Dask distributed cluster.

The driver (the process calling `indexer.build.build_index`) reads the corpus, fills
the doc store and hands partitions of texts to the workers; each worker loads the
model once (a per-process cache keyed by model path and backend), encodes the
partitions it gets and writes their shards to the shared work folder. The index is
then assembled as FAISS's ``contrib/ondisk.py`` does: an IVF index is trained once
on the driver, each worker adds a contiguous run of shards to a copy of the trained
empty index and writes it as a part file, and the driver merges the parts in order
(read from disk first: ``merge_from`` empties its source). Other index types (Flat,
HNSW, refine) are filled on the driver from the shards.

Because rows, shards and merge order are the same as in a local build, the result
holds the same ids and the same vectors as a single-machine build of the same data.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from tqdm.auto import tqdm

from indexer.executor import Partition, fill_from_shards
from indexer.shards import WorkDir, encode_sorted, read_shard, write_shard
from search.atomic import atomic_path
from search.encoder import Encoder, load_encoder

logger = logging.getLogger(__name__)

_ENCODERS: dict[tuple[str, str], Encoder] = {}
_ENCODERS_LOCK = threading.Lock()


def worker_encoder(model: str, backend: str) -> Encoder:
    """The encoder of this worker process, loaded on first use and kept."""
    with _ENCODERS_LOCK:
        if (model, backend) not in _ENCODERS:
            _ENCODERS[(model, backend)] = load_encoder(model, backend=backend)  # type: ignore[arg-type]
        return _ENCODERS[(model, backend)]


def loaded_encoders() -> list[tuple[str, str]]:
    """``(model, backend)`` of the encoders this process holds (run on workers to check)."""
    with _ENCODERS_LOCK:
        return sorted(_ENCODERS)


def encode_partition(
    model: str,
    backend: str,
    batch_size: int,
    shard_dir: str,
    number: int,
    rows: np.ndarray,
    texts: list[str],
) -> int:
    """Worker task: encode one partition and checkpoint it as shard `number`."""
    vecs = encode_sorted(worker_encoder(model, backend), texts, batch_size=batch_size)
    write_shard(Path(shard_dir), number, rows, vecs)
    return len(rows)


def fill_part(trained: np.ndarray, shard_dir: str, numbers: list[int], part_path: str) -> str:
    """Worker task: add shards to a copy of the trained empty index, write it to `part_path`."""
    index = faiss.deserialize_index(trained)
    for number in numbers:
        vecs, ids = read_shard(Path(shard_dir), number)
        index.add_with_ids(np.ascontiguousarray(vecs), ids)
    with atomic_path(Path(part_path)) as tmp:
        faiss.write_index(index, str(tmp))
    return part_path


class DaskEngine:
    """Encode and fill on a Dask cluster.

    Args:
        scheduler: Scheduler address (``tcp://host:8786``) or a `distributed.Client`.
        model: Model name or folder as the workers can resolve it (a path on a
            shared or identical file system).
        backend: Encoder backend the workers load.
        batch_size: Texts per forward pass.
        in_flight: Partitions submitted per worker before waiting (bounds driver memory).
        timeout: Seconds to wait for the scheduler.
    """

    name = "dask"

    def __init__(
        self,
        scheduler: Any,
        *,
        model: str,
        backend: str = "auto",
        batch_size: int = 32,
        in_flight: int = 2,
        timeout: float = 30.0,
    ) -> None:
        from distributed import Client

        self._own = isinstance(scheduler, str)
        self.client = (
            Client(scheduler, timeout=timeout, set_as_default=False) if self._own else scheduler
        )
        self.model = model
        self.backend = backend
        self.batch_size = batch_size
        self.in_flight = in_flight

    def _workers(self) -> int:
        return max(1, len(self.client.scheduler_info()["workers"]))

    def encode(
        self, parts: Iterable[Partition], shard_dir: Path, done: Callable[[int], None]
    ) -> None:
        from distributed import as_completed

        window = self.in_flight * self._workers()
        running = as_completed()
        pending = 0
        for part in parts:
            running.add(
                self.client.submit(
                    encode_partition,
                    self.model,
                    self.backend,
                    self.batch_size,
                    str(shard_dir),
                    part.number,
                    part.rows,
                    part.texts,
                    pure=False,
                )
            )
            pending += 1
            while pending >= window:
                done(next(running).result())
                pending -= 1
        for future in running:
            done(future.result())

    def fill(self, index: faiss.Index, work: WorkDir, progress: bool) -> faiss.Index:
        top = faiss.downcast_index(index)
        numbers = work.shards()
        if not isinstance(top, faiss.IndexIVF) or len(numbers) < 2:
            return fill_from_shards(index, work, progress)
        n_parts = min(len(numbers), 2 * self._workers())
        groups = [list(g) for g in np.array_split(np.asarray(numbers), n_parts) if len(g)]
        trained = self.client.scatter(faiss.serialize_index(index), broadcast=True)
        paths = [str(work.path / f"part-{i:04d}.faiss") for i in range(len(groups))]
        futures = [
            self.client.submit(
                fill_part, trained, str(work.shard_dir), [int(n) for n in g], p, pure=False
            )
            for g, p in zip(groups, paths, strict=True)
        ]
        self.client.gather(futures)
        for path in tqdm(paths, desc="merging parts", unit="part", disable=not progress):
            part = faiss.read_index(path)  # a fresh copy: merge_from empties it
            top.merge_from(part, 0)
            del part
            os.unlink(path)
        return index

    def close(self) -> None:
        if self._own:
            self.client.close()
