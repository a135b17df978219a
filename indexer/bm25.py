"""Write the BM25 index of an index folder (see `search.bm25_index`)."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from indexer.publish import swap_in, temp_folder, writer_lock
from search.assets import atomic_write_text, sha256_file
from search.bm25_index import (
    BM25_DIR,
    BM25_FORMAT_VERSION,
    META_FILE,
    ROWS_FILE,
    STEMMER_LANGUAGE,
    STOPWORDS,
    make_stemmer,
    tokenize,
)
from search.docstore import DocStore
from search.index_folder import DOCSTORE_FILE, MANIFEST
from search.types import DataError, document_text

logger = logging.getLogger(__name__)

_READ_CHUNK = 4096


def _rows_in_order(store: DocStore) -> Iterator[tuple[int, str]]:
    """``(row, title + text)`` of every document, in row order (rows may have holes)."""
    ids = store.ids()
    if not ids:
        return
    last = store.by_id(ids[-1])
    if last is None:  # deleted between the two reads
        return
    for start in range(0, last[0] + 1, _READ_CHUNK):
        chunk = store.by_rows(range(start, start + _READ_CHUNK))
        for row in sorted(chunk):
            _, title, text = chunk[row]
            yield row, document_text(title, text)


def write_bm25(folder: Path) -> None:
    """Build the BM25 index of ``folder/docs.sqlite`` into ``folder/bm25/``, atomically.

    The same tokenisation as `search.evaluate.bm25_results`: English stopwords and
    Snowball stemming when PyStemmer is installed. The new index is written to a
    temporary folder beside ``bm25/`` and swapped in with `indexer.publish.swap_in`
    (one atomic exchange on Linux), under a lock on the folder, so concurrent calls
    take turns. When the folder's manifest lists file checksums, the ``bm25/``
    entries are updated so the folder still verifies.

    Raises:
        DataError: `folder` has no doc store, or the doc store is empty.
    """
    import bm25s

    docs_file = folder / DOCSTORE_FILE
    if not docs_file.is_file():
        raise DataError(f"{folder} has no {DOCSTORE_FILE}; build the index folder first")
    store = DocStore(docs_file)
    try:
        pairs = list(_rows_in_order(store))
    finally:
        store.close()
    if not pairs:
        raise DataError(f"{docs_file} holds no documents; nothing to index with BM25")
    stemmer = make_stemmer()
    model = bm25s.BM25()
    model.index(tokenize([t for _, t in pairs], stemmer), show_progress=False)
    out = folder / BM25_DIR
    with writer_lock(out):
        tmp = temp_folder(out)
        try:
            _save(model, pairs, docs_file, stemmer is not None, tmp)
            swap_in(tmp, out)
            _list_in_manifest(folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    logger.info("wrote BM25 index of %d documents to %s", len(pairs), out)


def _save(
    model: Any, pairs: list[tuple[int, str]], docs_file: Path, stemmed: bool, tmp: Path
) -> None:
    model.save(str(tmp), show_progress=False)
    np.save(tmp / ROWS_FILE, np.array([r for r, _ in pairs], dtype=np.int64))
    meta = {
        "format_version": BM25_FORMAT_VERSION,
        "count": len(pairs),
        "stopwords": STOPWORDS,
        "stemmer": STEMMER_LANGUAGE if stemmed else None,
        "docs_sha256": sha256_file(docs_file),
        "bm25s_version": version("bm25s"),
    }
    atomic_write_text(tmp / META_FILE, json.dumps(meta, indent=2) + "\n")


def _list_in_manifest(folder: Path) -> None:
    """Replace the ``bm25/`` checksums in the manifest's ``files`` (if it has that map)."""
    file = folder / MANIFEST
    if not file.is_file():
        return
    manifest = json.loads(file.read_text())
    files = manifest.get("files")
    if not isinstance(files, dict):
        return
    prefix = f"{BM25_DIR}/"
    files = {name: digest for name, digest in files.items() if not name.startswith(prefix)}
    for path in sorted((folder / BM25_DIR).rglob("*")):
        if path.is_file():
            files[path.relative_to(folder).as_posix()] = sha256_file(path)
    manifest["files"] = files
    atomic_write_text(file, json.dumps(manifest, indent=2) + "\n")
