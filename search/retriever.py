"""The retriever: an encoder plus an index folder, answering queries with typed hits."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from search.assets import resolve_model
from search.encoder import Backend, Encoder, available_backends, load_encoder
from search.index_folder import IndexFolder, load_index_folder
from search.types import Hit, IndexMismatchError

logger = logging.getLogger(__name__)

SearchParams = Mapping[str, float]


class Retriever:
    """Dense retrieval over an index folder.

    Args:
        encoder: Encodes queries; must be the model the index was built with.
        folder: The loaded index folder.

    Raises:
        IndexMismatchError: the encoder's model hash differs from the index's.
    """

    def __init__(self, encoder: Encoder, folder: IndexFolder) -> None:
        if encoder.model_hash != folder.model_hash or encoder.dim != folder.index.d:
            raise IndexMismatchError(
                f"index {folder.path} was built with model {folder.manifest['model']['name']} "
                f"(hash {folder.model_hash}, dim {folder.index.d}) but the query encoder is "
                f"{encoder.name} (hash {encoder.model_hash}, dim {encoder.dim}); search with "
                "the index's own model or rebuild the index with this one"
            )
        self.encoder = encoder
        self.folder = folder

    @classmethod
    def open(
        cls,
        index_dir: Path,
        *,
        model: str | None = None,
        backend: Backend = "auto",
        mmap: bool = False,
        threads: int | None = None,
    ) -> Retriever:
        """Load an index folder and its model (the one in the manifest unless given).

        Args:
            index_dir: The index folder.
            model: Model name or folder; default: the manifest's.
            backend: Encoder backend (see `search.encoder.load_encoder`).
            mmap: Memory-map the index where FAISS supports it (see `load_index_folder`).
            threads: Encoder threads (see `search.encoder.load_encoder`).
        """
        folder = load_index_folder(index_dir, mmap=mmap)
        spec = model or folder.manifest["model"].get("path") or folder.manifest["model"]["name"]
        recorded = folder.manifest["model"].get("backend")
        if backend == "auto" and recorded in available_backends(resolve_model(spec)):
            # Queries through the artifact that encoded the documents (int8 vectors
            # differ from fp32 ones), unless the caller picks another.
            backend = recorded
        encoder = load_encoder(spec, backend=backend, threads=threads)
        # The name the user gave (here or to the indexer, which recorded it), not the
        # last part of the folder it resolved to (an installed model's is "model").
        encoder.name = model or folder.manifest["model"]["name"]
        return cls(encoder, folder)

    def search_vectors(
        self, vectors: np.ndarray, k: int, *, params: SearchParams | None = None
    ) -> list[list[Hit]]:
        """Search with query vectors.

        Args:
            vectors: float32 array of shape (n, dim), rows L2-normalised.
            k: Hits wanted per query (capped at the number of live documents).
            params: Search parameters overriding the index's stored ones for this call
                (``nprobe`` for IVF, ``efSearch`` for HNSW, ``k_factor`` for refine).

        Returns:
            Per query, up to `k` hits, best first. Deleted documents never appear; when
            FAISS cannot skip them itself, more candidates are fetched until `k` live
            hits are found or the whole index was asked.

        Raises:
            ValueError: `params` names a parameter this index does not take.
        """
        index = self.folder.index
        queries = np.ascontiguousarray(vectors, dtype=np.float32)
        k = max(1, min(k, self.folder.count))
        _, filtered, _ = self.folder.search_parameters(params)  # validates params too
        fetch = k if filtered else min(index.ntotal, k + len(self.folder.tombstones))
        while True:
            sp, _, _keep = self.folder.search_parameters(params, k=fetch)
            scores, rows = index.search(queries, max(fetch, 1), params=sp)
            out = self._hits(scores, rows, k)
            short = any(len(h) < k for h in out)
            if not short or not len(self.folder.tombstones) or fetch >= index.ntotal:
                return out  # more candidates only help when some were dead
            fetch = min(index.ntotal, 2 * fetch)  # a few doublings at most

    def _hits(self, scores: np.ndarray, rows: np.ndarray, k: int) -> list[list[Hit]]:
        docs = self.folder.store.by_rows(sorted({int(r) for r in rows.ravel() if r >= 0}))
        out = []
        for srow, rrow in zip(scores, rows, strict=True):
            hits = []
            for score, row in zip(srow, rrow, strict=True):
                doc = docs.get(int(row)) if row >= 0 else None
                if doc is not None:  # tombstoned rows have no document
                    hits.append(Hit(doc[0], float(score), doc[1], doc[2]))
                    if len(hits) == k:
                        break
            out.append(hits)
        return out

    def search_many(
        self, queries: Sequence[str], k: int = 10, *, params: SearchParams | None = None
    ) -> list[list[Hit]]:
        """Top-`k` hits for each query, best first (see `search_vectors` for `params`)."""
        return self.search_vectors(self.encoder.encode(list(queries)), k, params=params)

    def search(self, query: str, k: int = 10, *, params: SearchParams | None = None) -> list[Hit]:
        """Top-`k` hits for one query, best first (see `search_vectors` for `params`)."""
        return self.search_many([query], k, params=params)[0]

    def close(self) -> None:
        self.folder.close()
