"""Build an index folder from a stream of documents (see `search.index_folder`)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from importlib.metadata import version
from itertools import islice
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from tqdm.auto import tqdm

from search.assets import atomic_write_text, sha256_file
from search.docstore import DocStore
from search.embed_cache import EmbeddingCache
from search.encoder import Encoder
from search.index_folder import DOCSTORE_FILE, FORMAT_VERSION, INDEX_FILE, MANIFEST
from search.types import DataError, document_text

logger = logging.getLogger(__name__)

Doc = tuple[str, str, str]  # (id, title, text)


def make_index(factory: str, dim: int) -> faiss.Index:
    """A FAISS index for inner product over normalised vectors, accepting our own ids.

    Flat and HNSW indexes are wrapped in ``IDMap2`` (IVF indexes take ids natively).

    Raises:
        ValueError: FAISS does not understand `factory`.
    """
    spec = factory if factory.startswith(("IVF", "IDMap")) else f"IDMap2,{factory}"
    try:
        return faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise ValueError(
            f"FAISS cannot build factory string {factory!r}; try Flat, HNSW32 or IVF256,Flat"
        ) from exc


def _chunks(docs: Iterable[Doc], size: int) -> Iterator[list[Doc]]:
    it = iter(docs)
    while chunk := list(islice(it, size)):
        yield chunk


def _swap_in(tmp: Path, out: Path) -> None:
    """Publish `tmp` as `out`: readers see the old folder or the new one, never half."""
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def build_index(
    encoder: Encoder,
    docs: Iterable[Doc],
    out: Path,
    *,
    factory: str = "Flat",
    batch_size: int = 32,
    chunk_size: int = 512,
    cache: EmbeddingCache | None = None,
    model_path: str | None = None,
    total: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Encode `docs` with `encoder` and write an index folder at `out`, atomically.

    Args:
        encoder: The document encoder (its model hash goes into the manifest).
        docs: ``(id, title, text)`` tuples; ids must be unique.
        out: The index folder to create or replace.
        factory: FAISS factory string (``Flat``, ``HNSW32``, ``IVF1024,Flat``…).
        chunk_size: Documents read, length-sorted and encoded together.
        cache: Embedding cache to read and fill (re-indexing the same corpus is free).
        model_path: Where the model lives, recorded so `Retriever.open` can find it.
        total: Number of documents, when known, for the progress bar's ETA.

    Returns:
        The manifest written.
    """
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        index = make_index(factory, encoder.dim)
        store = DocStore(tmp / DOCSTORE_FILE, readonly=False)
        seen: set[str] = set()
        pending: list[np.ndarray] = []  # held back until an untrained index can train
        pending_ids: list[np.ndarray] = []
        t0 = time.perf_counter()
        bar = tqdm(total=total, desc=f"indexing ({encoder.name})", unit="doc", disable=not progress)
        row = 0
        for chunk in _chunks(docs, chunk_size):
            for doc_id, _, _ in chunk:
                if doc_id in seen:
                    raise DataError(f"duplicate document id {doc_id!r}; ids must be unique")
                seen.add(doc_id)
            texts = [document_text(title, text) for _, title, text in chunk]
            if cache is not None:
                vecs, _ = cache.encode(encoder, texts, batch_size=batch_size, progress=False)
            else:
                order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
                vecs = np.empty((len(texts), encoder.dim), dtype=np.float32)
                vecs[order] = encoder.encode([texts[i] for i in order], batch_size=batch_size)
            ids = np.arange(row, row + len(chunk), dtype=np.int64)
            store.add((int(r), d, t, x) for r, (d, t, x) in zip(ids, chunk, strict=True))
            row += len(chunk)
            if index.is_trained:
                index.add_with_ids(vecs, ids)
            else:
                pending.append(vecs)
                pending_ids.append(ids)
            bar.update(len(chunk))
        bar.close()
        if row == 0:
            raise DataError("the corpus holds no documents; nothing to index")
        if pending:
            vecs, ids = np.concatenate(pending), np.concatenate(pending_ids)
            index.train(vecs)
            index.add_with_ids(vecs, ids)
        seconds = time.perf_counter() - t0
        store.close()
        faiss.write_index(index, str(tmp / INDEX_FILE))
        manifest: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "model": {
                "name": encoder.name,
                "path": model_path,
                "hash": encoder.model_hash,
                "backend": encoder.backend,
            },
            "dim": encoder.dim,
            "metric": "inner_product",
            "normalized": True,
            "factory": factory,
            "count": row,
            "build_seconds": round(seconds, 3),
            "docs_per_s": round(row / seconds, 2),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "versions": {
                p: version(p) for p in ("faiss-cpu", "sentence-transformers", "distilsearch")
            },
            "files": {f: sha256_file(tmp / f) for f in (INDEX_FILE, DOCSTORE_FILE)},
        }
        atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=2) + "\n")
        _swap_in(tmp, out)
        return manifest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
