"""What the service searches with, and how it is swapped without failing a request.

A `LoadedIndex` is one loaded index: the dense retriever and, when the folder has one,
the BM25 index. `IndexHolder` hands out leases on the current index; `swap`
installs a fully loaded new one in one step. Requests that hold a lease on the old
loaded finish on it, and the old index is closed when its last lease ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from search.bm25_index import BM25Index, has_bm25, load_bm25
from search.encoder import Encoder
from search.index_folder import load_index_folder
from search.retriever import Retriever
from search.types import DistilsearchError

logger = logging.getLogger(__name__)


class NotLoadedError(RuntimeError):
    """no index is loaded (the service is starting or stopping)."""


@dataclass(eq=False)
class LoadedIndex:
    """One loaded index.

    Attributes:
        retriever: Dense retrieval (encoder + FAISS index + doc store).
        bm25: The BM25 index, or None.
        bm25_error: Why there is no BM25 index (None when there is one).
        generation: 1 for the first index, +1 at each swap.
        owned: Whether the service closes the retriever (False when a caller passed it).
    """

    retriever: Retriever
    bm25: BM25Index | None
    bm25_error: str | None
    generation: int = 1
    owned: bool = True
    loaded_at: float = field(default_factory=time.time)
    leases: int = 0
    retired: bool = False

    @property
    def index_dir(self) -> Path:
        return self.retriever.folder.path

    def close(self) -> None:
        if self.owned:
            self.retriever.close()
            logger.info("closed index generation %d (%s)", self.generation, self.index_dir)


def _load_bm25(index_dir: Path) -> tuple[BM25Index | None, str | None]:
    if not has_bm25(index_dir):
        return None, f"index {index_dir} has no BM25 index (no bm25/ folder)"
    try:
        return load_bm25(index_dir), None
    except DistilsearchError as exc:
        logger.warning("BM25 index not loaded: %s", exc)
        return None, str(exc)


def _warm_up(retriever: Retriever) -> None:
    """Encode one text before requests do: lazy set-up (a fast tokenizer's truncation
    and padding state, onnxruntime's buffers) then happens once, not in the first
    requests, which the encode workers may run at the same time."""
    retriever.encoder.encode(["warm-up"])


def load_index(
    index_dir: Path,
    *,
    model: str | None = None,
    backend: str = "auto",
    encoder: Encoder | None = None,
    generation: int = 1,
    threads: int | None = None,
) -> LoadedIndex:
    """Load an index folder (and its BM25 index, if any) completely.

    Args:
        index_dir: The index folder.
        model: Query encoder spec; default: the one in the index's manifest.
        backend: Encoder backend.
        encoder: An encoder already loaded; reused when its model hash matches the
            index's (a reload of the same model then costs no model load).
        generation: Generation number to give the index.
        threads: Encoder threads (see `search.encoder.load_encoder`).

    Raises:
        DistilsearchError: the folder is not a loadable index, or the model mismatches.
    """
    folder = load_index_folder(index_dir)
    if encoder is not None and encoder.model_hash == folder.model_hash:
        retriever = Retriever(encoder, folder)
    else:
        folder.close()
        retriever = Retriever.open(
            index_dir,
            model=model,
            backend=backend,  # type: ignore[arg-type]
            threads=threads,
        )
        _warm_up(retriever)  # a reused encoder has served already
    bm25, error = _load_bm25(index_dir)
    return LoadedIndex(retriever, bm25, error, generation=generation)


def loaded_index_for(retriever: Retriever) -> LoadedIndex:
    """A loaded index around a retriever the caller owns (the service will not close it)."""
    bm25, error = _load_bm25(retriever.folder.path)
    return LoadedIndex(retriever, bm25, error, owned=False)


class IndexHolder:
    """The current index, leased to requests and swapped atomically."""

    def __init__(self) -> None:
        self._current: LoadedIndex | None = None
        self._lock = threading.Lock()

    @property
    def current(self) -> LoadedIndex | None:
        return self._current

    def acquire(self) -> LoadedIndex:
        """Take a lease on the current index; pair with `release`.

        Raises:
            NotLoadedError: no index is loaded.
        """
        with self._lock:
            loaded = self._current
            if loaded is None:
                raise NotLoadedError("the index is not loaded")
            loaded.leases += 1
            return loaded

    def release(self, loaded: LoadedIndex) -> None:
        """End a lease; closes a swapped-out index when its last lease ends."""
        with self._lock:
            loaded.leases -= 1
            close = loaded.retired and loaded.leases == 0
        if close:
            loaded.close()

    @contextmanager
    def lease(self) -> Iterator[LoadedIndex]:
        """The current index, kept open until the `with` block ends."""
        loaded = self.acquire()
        try:
            yield loaded
        finally:
            self.release(loaded)

    def swap(self, new: LoadedIndex | None) -> LoadedIndex | None:
        """Install `new` (None: none); the old index closes once its leases end."""
        with self._lock:
            old, self._current = self._current, new
            if old is not None:
                old.retired = True
            close = old is not None and old.leases == 0
        if close and old is not None:
            old.close()
        return old
