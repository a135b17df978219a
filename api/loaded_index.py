"""What the service searches and embeds with, and how it is swapped without failing a
request.

A `LoadedModel` is the served encoder with what ``/v1/embeddings`` needs beside it. A
`LoadedIndex` is one loaded index: the dense retriever, its `LoadedModel` and, when
the folder has one, the BM25 index. `IndexHolder` hands out leases on the current
index; `swap` installs a fully loaded new one in one step. Requests that hold a lease
on the old loaded finish on it, and the old index is closed when its last lease ends.
A server without an index serves a `LoadedModel` alone (`load_model`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from api.embeddings import TokenCounter, token_counter
from search.assets import resolve_model
from search.bm25_index import BM25Index, has_bm25, load_bm25
from search.encoder import Backend, Encoder, load_encoder
from search.index_folder import load_index_folder
from search.retriever import Retriever
from search.types import DistilsearchError

logger = logging.getLogger(__name__)


class NotLoadedError(RuntimeError):
    """no index is loaded (the service is starting or stopping)."""


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """The served encoder, as ``/v1/embeddings`` and ``/v1/models`` use it.

    Attributes:
        encoder: The encoder (an index's query encoder, or one served alone).
        tokens: Counts the tokens the encoder reads of each text
            (`api.embeddings.token_counter`).
        names: The names a request may call it by: its id, and the name or folder it
            was loaded from.
        created: Unix time the model folder was last written (else when it was loaded).
    """

    encoder: Encoder
    tokens: TokenCounter
    names: frozenset[str]
    created: int

    @property
    def id(self) -> str:
        """The model's id in ``/v1/models`` and in responses: the encoder's name."""
        return self.encoder.name


def model_for(encoder: Encoder, *names: str | None) -> LoadedModel:
    """`encoder` as a `LoadedModel`, also known by `names` (None left out)."""
    folder = getattr(encoder, "folder", None)  # torch, ONNX and static encoders keep it
    try:
        created = int(Path(folder).stat().st_mtime) if folder is not None else int(time.time())
    except OSError:
        created = int(time.time())
    known = frozenset(n for n in (encoder.name, *names) if n)
    return LoadedModel(encoder, token_counter(encoder), known, created)


def load_model(spec: str, *, backend: str = "auto", threads: int | None = None) -> LoadedModel:
    """Load an encoder to serve alone (no index), warmed up.

    Args:
        spec: Model name or folder (`search.assets.resolve_model`).
        backend: Encoder backend.
        threads: Encoder threads (see `search.encoder.load_encoder`).

    Raises:
        AssetError: the model cannot be resolved, or the backend is absent.
    """
    encoder = load_encoder(spec, backend=cast(Backend, backend), threads=threads)
    model = model_for(encoder, spec, str(resolve_model(spec)))
    _warm_up(model)
    return model


@dataclass(eq=False)
class LoadedIndex:
    """One loaded index.

    Attributes:
        retriever: Dense retrieval (encoder + FAISS index + doc store).
        model: The retriever's encoder as ``/v1/embeddings`` serves it.
        bm25: The BM25 index, or None.
        bm25_error: Why there is no BM25 index (None when there is one).
        generation: 1 for the first index, +1 at each swap.
        owned: Whether the service closes the retriever (False when a caller passed it).
    """

    retriever: Retriever
    model: LoadedModel
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


def _warm_up(model: LoadedModel) -> None:
    """Encode and count one text before requests do: lazy set-up (a fast tokenizer's
    truncation and padding state, onnxruntime's buffers) then happens once, not in the
    first requests, which the encode workers may run at the same time."""
    model.encoder.encode(["warm-up"])
    model.tokens(["warm-up"])


def _model_of(retriever: Retriever) -> LoadedModel:
    """The retriever's encoder as a `LoadedModel`, also known by the manifest's model
    name and path."""
    recorded = retriever.folder.manifest.get("model", {})
    return model_for(retriever.encoder, recorded.get("name"), recorded.get("path"))


def load_index(
    index_dir: Path,
    *,
    model: str | None = None,
    backend: str = "auto",
    reuse: LoadedModel | None = None,
    generation: int = 1,
    threads: int | None = None,
) -> LoadedIndex:
    """Load an index folder (and its BM25 index, if any) completely.

    Args:
        index_dir: The index folder.
        model: Query encoder spec; default: the one in the index's manifest.
        backend: Encoder backend.
        reuse: A model already loaded; reused when its model hash matches the
            index's (a reload of the same model then costs no model load).
        generation: Generation number to give the index.
        threads: Encoder threads (see `search.encoder.load_encoder`).

    Raises:
        DistilsearchError: the folder is not a loadable index, or the model mismatches.
    """
    folder = load_index_folder(index_dir)
    if reuse is not None and reuse.encoder.model_hash == folder.model_hash:
        retriever = Retriever(reuse.encoder, folder)
        served = reuse
    else:
        folder.close()
        retriever = Retriever.open(
            index_dir,
            model=model,
            backend=cast(Backend, backend),
            threads=threads,
        )
        served = _model_of(retriever)
        _warm_up(served)  # a reused encoder has served already
    bm25, error = _load_bm25(index_dir)
    return LoadedIndex(retriever, served, bm25, error, generation=generation)


def loaded_index_for(retriever: Retriever) -> LoadedIndex:
    """A loaded index around a retriever the caller owns (the service will not close it)."""
    bm25, error = _load_bm25(retriever.folder.path)
    return LoadedIndex(retriever, _model_of(retriever), bm25, error, owned=False)


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
