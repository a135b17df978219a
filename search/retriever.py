"""The retriever: an encoder plus an index folder, answering queries with typed hits."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from search.encoder import Backend, Encoder, load_encoder
from search.index_folder import IndexFolder, load_index_folder
from search.types import Hit, IndexMismatchError

logger = logging.getLogger(__name__)


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
        cls, index_dir: Path, *, model: str | None = None, backend: Backend = "auto"
    ) -> Retriever:
        """Load an index folder and its model (the one in the manifest unless given)."""
        folder = load_index_folder(index_dir)
        spec = model or folder.manifest["model"].get("path") or folder.manifest["model"]["name"]
        return cls(load_encoder(spec, backend=backend), folder)

    def search_vectors(self, vectors: np.ndarray, k: int) -> list[list[Hit]]:
        """Search with query vectors of shape (n, dim), float32, normalised."""
        k = max(1, min(k, self.folder.index.ntotal))
        scores, rows = self.folder.index.search(np.ascontiguousarray(vectors), k)
        docs = self.folder.store.by_rows(sorted({int(r) for r in rows.ravel() if r >= 0}))
        out = []
        for srow, rrow in zip(scores, rows, strict=True):
            hits = []
            for score, row in zip(srow, rrow, strict=True):
                doc = docs.get(int(row))
                if row >= 0 and doc is not None:
                    hits.append(Hit(doc[0], float(score), doc[1], doc[2]))
            out.append(hits)
        return out

    def search_many(self, queries: Sequence[str], k: int = 10) -> list[list[Hit]]:
        """Top-`k` hits for each query, best first."""
        return self.search_vectors(self.encoder.encode(list(queries)), k)

    def search(self, query: str, k: int = 10) -> list[Hit]:
        """Top-`k` hits for one query, best first."""
        return self.search_many([query], k)[0]

    def close(self) -> None:
        self.folder.close()
