"""The index folder format, reading side.

An index folder holds::

    manifest.json   what made it: model name/path/hash, dim, metric, factory, count,
                    versions, sha256 of every other file
    index.faiss     FAISS index over L2-normalised vectors (inner product = cosine),
                    vector ids = ``row`` of docs.sqlite
    docs.sqlite     the doc store (id, title, text per row)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss

from search.docstore import DocStore
from search.types import DataError

MANIFEST = "manifest.json"
INDEX_FILE = "index.faiss"
DOCSTORE_FILE = "docs.sqlite"
FORMAT_VERSION = 1


@dataclass
class IndexFolder:
    """A loaded index folder.

    Attributes:
        path: The folder.
        manifest: Parsed ``manifest.json``.
        index: The FAISS index.
        store: The doc store.
    """

    path: Path
    manifest: dict[str, Any]
    index: faiss.Index
    store: DocStore

    @property
    def model_hash(self) -> str:
        return str(self.manifest["model"]["hash"])

    @property
    def count(self) -> int:
        return int(self.manifest["count"])

    def close(self) -> None:
        self.store.close()


def read_manifest(path: Path) -> dict[str, Any]:
    """Parse ``manifest.json`` of an index folder.

    Raises:
        DataError: the folder or manifest is missing or not a distilsearch index.
    """
    file = path / MANIFEST
    if not file.is_file():
        raise DataError(
            f"{path} is not an index folder (no {MANIFEST}); build one with "
            "`distilsearch index --model MODEL --data CORPUS --out DIR`"
        )
    try:
        manifest: dict[str, Any] = json.loads(file.read_text())
    except ValueError as exc:
        raise DataError(f"{file} is not valid JSON ({exc}); rebuild the index") from exc
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"{path}: index format {manifest.get('format_version')} is not supported "
            f"(expected {FORMAT_VERSION}); rebuild the index with this version"
        )
    return manifest


def load_index_folder(path: Path, *, mmap: bool = False) -> IndexFolder:
    """Load an index folder for searching.

    Args:
        path: The folder written by `indexer`.
        mmap: Memory-map the FAISS file (``IO_FLAG_ONDISK_SAME_DIR``) instead of
            reading it into RAM; supported for flat and IVF indexes.
    """
    manifest = read_manifest(path)
    flags = faiss.IO_FLAG_ONDISK_SAME_DIR if mmap else 0
    index = faiss.read_index(str(path / INDEX_FILE), flags)
    return IndexFolder(path, manifest, index, DocStore(path / DOCSTORE_FILE))
