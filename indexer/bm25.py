"""Write the BM25 side of an index folder (format: `search.bm25_index`).

A pure writer: it fills ``folder/bm25/`` of a folder that is being staged and
publishes nothing. `indexer.publish.publish` calls it before writing the manifest,
so the BM25 files are checksummed and swapped in with the rest; to add BM25 to a
published folder, use `indexer.update.write_bm25`.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import numpy as np

from search.assets import sha256_file
from search.bm25_index import BM25_DIR, META_FILE, ROWS_FILE, BM25Index
from search.docstore import DocStore
from search.index_folder import DOCSTORE_FILE
from search.types import DataError, document_text

logger = logging.getLogger(__name__)

__all__ = ["write_bm25_files"]

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


def write_bm25_files(folder: Path) -> int:
    """Build the BM25 index of ``folder/docs.sqlite`` into ``folder/bm25/``.

    Any ``bm25/`` already there is replaced. Files are written in place: call this on
    a staged folder that is published afterwards (`indexer.publish.publish`).

    Returns:
        The number of documents indexed.

    Raises:
        DataError: `folder` has no doc store, or the doc store is empty.
    """
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
    rows = np.array([r for r, _ in pairs], dtype=np.int64)
    index = BM25Index.build([t for _, t in pairs], rows)
    out = folder / BM25_DIR
    shutil.rmtree(out, ignore_errors=True)
    index.model.save(str(out), show_progress=False)
    np.save(out / ROWS_FILE, index.rows)
    meta = {
        **index.meta,
        "docs_sha256": sha256_file(docs_file),
        "bm25s_version": version("bm25s"),
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    logger.info("wrote BM25 index of %d documents to %s", len(pairs), out)
    return len(pairs)
