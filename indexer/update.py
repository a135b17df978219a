"""Incremental updates of an index folder: upsert and delete documents, add BM25.

Each call edits a copy of the folder (copy-on-write) under the folder's writer lock
and swaps it in (`indexer.publish`), so a reader never sees a half-updated folder and
concurrent writers take turns. Index types that can delete (Flat, IVF) drop replaced
and deleted vectors; the others (HNSW, refine) keep them as tombstones that searchers
skip, and the index is compacted (rebuilt from its live vectors) once tombstones pass
a quarter of it. A full rebuild (`indexer.build`) never has tombstones.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from indexer.bm25 import write_bm25_files
from indexer.factory import can_remove, make_index
from indexer.publish import (
    index_mb,
    publish,
    temp_folder,
    writer_lock,
)
from indexer.shards import encode_sorted
from search.bm25_index import BM25_DIR
from search.docstore import DocStore
from search.encoder import Encoder
from search.index_folder import (
    DOCSTORE_FILE,
    FORMAT_VERSION,
    INDEX_FILE,
    index_chain,
    read_index_manifest,
)
from search.types import DataError, IndexMismatchError, document_text

logger = logging.getLogger(__name__)

COMPACT_AT = 0.25  # compact when tombstones exceed this fraction of the index
_CHUNK = 1024

__all__ = ["compact", "delete_documents", "upsert_documents", "write_bm25"]


@dataclass
class _Edit:
    folder: Path
    manifest: dict[str, Any]
    index: faiss.Index
    store: DocStore
    removable: bool
    changed: bool = False

    def drop_rows(self, rows: list[int]) -> None:
        """Take rows out of the store, and out of the index or into tombstones."""
        if not rows:
            return
        self.store.delete_rows(rows)
        if self.removable:
            self.index.remove_ids(faiss.IDSelectorBatch(np.asarray(rows, dtype=np.int64)))
        else:
            self.store.add_tombstones(rows)
        self.changed = True


@contextmanager
def _editing(index_dir: Path, *, bm25: bool) -> Iterator[_Edit]:
    """Copy the folder, yield it for editing, then publish it if anything changed."""
    out = index_dir.resolve()
    with writer_lock(out):
        manifest = read_index_manifest(out)
        tmp = temp_folder(out)
        try:
            shutil.copytree(out, tmp, dirs_exist_ok=True)
            index = faiss.read_index(str(tmp / INDEX_FILE), faiss.IO_FLAG_ONDISK_SAME_DIR)
            store = DocStore(tmp / DOCSTORE_FILE, readonly=False)
            edit = _Edit(tmp, manifest, index, store, can_remove(index))
            try:
                yield edit
                if edit.changed:
                    _maybe_compact(edit)
            finally:
                store.close()
            if edit.changed:
                _publish(edit, out, bm25=bm25)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _publish(edit: _Edit, out: Path, *, bm25: bool) -> None:
    faiss.write_index(edit.index, str(edit.folder / INDEX_FILE))
    store = DocStore(edit.folder / DOCSTORE_FILE)
    try:
        count, tombstones = len(store), len(store.tombstones())
    finally:
        store.close()
    manifest = {
        **edit.manifest,
        "format_version": FORMAT_VERSION,
        "count": count,
        "ntotal": int(edit.index.ntotal),
        "tombstones": tombstones,
        "index_mb": index_mb(edit.folder),
        "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    publish(edit.folder, out, manifest, bm25=bm25, only_if_present=True)


def _check_encoder(manifest: dict[str, Any], encoder: Encoder, index_dir: Path) -> None:
    model = manifest["model"]
    if encoder.model_hash != model["hash"] or encoder.dim != manifest["dim"]:
        raise IndexMismatchError(
            f"index {index_dir} was built with model {model['name']} (hash {model['hash']}, "
            f"dim {manifest['dim']}) but the encoder is {encoder.name} (hash "
            f"{encoder.model_hash}, dim {encoder.dim}); update it with the index's own model "
            "or rebuild the index with this one"
        )


def upsert_documents(
    index_dir: Path,
    docs: Iterable[tuple[str, str, str]],
    encoder: Encoder,
    *,
    batch_size: int = 32,
    bm25: bool = True,
) -> dict[str, Any]:
    """Add documents, replacing those whose id the index already holds.

    Args:
        index_dir: An index folder (built by `indexer.build.build_index`).
        docs: ``(id, title, text)`` tuples; when an id repeats, the last one wins.
        encoder: The index's own model (same model hash).
        batch_size: Texts per forward pass.
        bm25: Rewrite the lexical index too, if the folder has one (see
            `indexer.publish.refresh_bm25`).

    Returns:
        ``{"added": int, "replaced": int, "count": int}``: ids new to the index, ids
        it held before (each counted once), and live documents after the update.

    Raises:
        DataError: `index_dir` is not an index folder.
        IndexMismatchError: `encoder` is not the index's model.
    """
    _check_encoder(read_index_manifest(index_dir), encoder, index_dir)
    added = replaced = 0
    seen: set[str] = set()
    with _editing(index_dir, bm25=bm25) as edit:
        _check_encoder(edit.manifest, encoder, index_dir)  # again, under the lock
        it = iter(docs)
        while chunk := list(islice(it, _CHUNK)):
            latest = {doc_id: (title, text) for doc_id, title, text in chunk}
            ids = list(latest)
            old = edit.store.rows_of(ids)
            fresh = [i for i in ids if i not in seen]
            replaced += sum(1 for i in fresh if i in old)
            added += sum(1 for i in fresh if i not in old)
            seen.update(ids)
            texts = [document_text(*latest[i]) for i in ids]
            vecs = encode_sorted(encoder, texts, batch_size=batch_size)
            edit.drop_rows(list(old.values()))
            start = edit.store.next_row()
            rows = np.arange(start, start + len(ids), dtype=np.int64)
            edit.index.add_with_ids(vecs, rows)
            edit.store.add(
                (int(r), i, latest[i][0], latest[i][1]) for r, i in zip(rows, ids, strict=True)
            )
            edit.changed = True
        count = len(edit.store)
    return {"added": added, "replaced": replaced, "count": count}


def delete_documents(index_dir: Path, ids: Iterable[str], *, bm25: bool = True) -> dict[str, Any]:
    """Delete documents by id.

    Args:
        index_dir: An index folder.
        ids: Document ids; repeats are counted once.
        bm25: Rewrite the lexical index too, if the folder has one.

    Returns:
        ``{"deleted": int, "missing": list[str], "count": int}``: ids deleted, ids the
        index did not hold (in the order given), and live documents after the delete.

    Raises:
        DataError: `index_dir` is not an index folder.
    """
    wanted = list(dict.fromkeys(ids))
    with _editing(index_dir, bm25=bm25) as edit:
        found = edit.store.rows_of(wanted)
        edit.drop_rows(list(found.values()))
        count = len(edit.store)
    return {"deleted": len(found), "missing": [i for i in wanted if i not in found], "count": count}


def write_bm25(index_dir: Path) -> dict[str, Any]:
    """Write (or rewrite) the BM25 index of a published index folder.

    Under the folder's writer lock, the folder is copied (files hard-linked where the
    file system allows: none of them is modified), ``bm25/`` is written into the copy
    (`indexer.bm25.write_bm25_files`) and the copy is published with a fresh manifest
    and swapped in, so readers see the folder without BM25 or with all of it.

    Returns:
        The manifest as written.

    Raises:
        DataError: `index_dir` has no doc store, an empty one, or no manifest.
    """
    if not (index_dir / DOCSTORE_FILE).is_file():
        raise DataError(f"{index_dir} has no {DOCSTORE_FILE}; build the index folder first")
    out = index_dir.resolve()
    with writer_lock(out):
        manifest = read_index_manifest(out)
        tmp = temp_folder(out)
        try:
            shutil.copytree(out, tmp, dirs_exist_ok=True, copy_function=_link_or_copy)
            shutil.rmtree(tmp / BM25_DIR, ignore_errors=True)
            write_bm25_files(tmp)  # raises on an empty store, unlike publish's refresh
            return publish(tmp, out, manifest, bm25=False)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _maybe_compact(edit: _Edit) -> None:
    dead = edit.store.tombstones()
    if len(dead) and len(dead) > COMPACT_AT * edit.index.ntotal:
        edit.index = compact(edit.index, edit.store, edit.manifest["factory"])


def compact(index: faiss.Index, store: DocStore, factory: str) -> faiss.Index:
    """Rebuild `index` from its live vectors, dropping tombstones (store is updated).

    The vectors are reconstructed from the index itself: exact for HNSW and flat
    refine stages, quantised for SQ refine stages.

    Returns:
        A new index of the same factory holding only the store's live rows.
    """
    wrapper: Any = faiss.downcast_index(index)  # IDMap/IDMap2: the only non-deleting kinds
    ids = faiss.vector_to_array(wrapper.id_map).astype(np.int64)
    inner = list(index_chain(index))[1]
    live = store.rows()
    keep = np.flatnonzero(np.isin(ids, live))
    step = 65536
    parts = [inner.reconstruct_n(s, min(step, len(ids) - s)) for s in range(0, len(ids), step)]
    vecs = np.vstack(parts) if parts else np.zeros((0, index.d), dtype=np.float32)
    fresh = make_index(factory, index.d)
    if not fresh.is_trained:
        fresh.train(vecs[keep])
    fresh.add_with_ids(vecs[keep], ids[keep])
    store.clear_tombstones()
    logger.info("compacted the index: %d live of %d vectors", len(keep), len(ids))
    return fresh
