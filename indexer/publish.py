"""Publishing index folders atomically: a writer lock, temp folders, manifest, swap.

Every change to an index folder (build, upsert, delete, adding BM25) is made in a
temp folder beside it, finished with its BM25 index and a manifest holding the
sha256 of every file, and swapped in (`search.atomic.swap_in_folder`: one
``renameat2(RENAME_EXCHANGE)`` where the OS supports it), so a reader always finds a
complete folder: the old version or the new one.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from indexer.bm25 import write_bm25_files
from search.atomic import atomic_write_json, swap_in_folder
from search.bm25_index import BM25_DIR
from search.docstore import DocStore
from search.index_folder import DOCSTORE_FILE, INDEX_FILE, IVFDATA_FILE, MANIFEST, checksums
from search.types import DataError

logger = logging.getLogger(__name__)


def versions() -> dict[str, str]:
    """Versions of the packages that shape an index folder."""
    out = {}
    for package in ("faiss-cpu", "numpy", "sentence-transformers", "distilsearch"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "unknown"
    return out


@contextmanager
def writer_lock(out: Path) -> Iterator[None]:
    """Hold the exclusive writer lock of index folder `out` (blocking).

    The lock is an ``flock`` on the parent folder, so it leaves no file behind; while
    holding it, leftovers of writers killed mid-publish are removed.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        for stale in out.parent.glob(f".{out.name}.tmp-*"):
            logger.info("removing %s left by an interrupted writer", stale)
            shutil.rmtree(stale, ignore_errors=True)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def temp_folder(out: Path) -> Path:
    """A fresh temp folder beside `out` (call under `writer_lock`)."""
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))


def refresh_bm25(folder: Path, *, bm25: bool, only_if_present: bool = False) -> None:
    """Write, rewrite or drop the BM25 index of staged folder `folder`.

    Called by `publish` after a build or an update and before the manifest is
    written, so the ``bm25/`` files are checksummed and swapped in with the rest.
    A folder whose doc store is empty gets no BM25 index (one of deleted documents
    would be wrong), and any old one is removed.

    Args:
        folder: The staged index folder, doc store complete.
        bm25: Write the lexical index (skipped when False).
        only_if_present: Rewrite it only if the folder already has one (updates).
    """
    target = folder / BM25_DIR
    if not bm25 or (only_if_present and not target.exists()):
        return
    store = DocStore(folder / DOCSTORE_FILE)
    try:
        empty = len(store) == 0
    finally:
        store.close()
    if empty:
        shutil.rmtree(target, ignore_errors=True)
        return
    write_bm25_files(folder)


def index_mb(folder: Path) -> float:
    """Size of the FAISS files of an index folder (index and on-disk lists), in MB."""
    files = [folder / INDEX_FILE, folder / IVFDATA_FILE]
    return round(sum(f.stat().st_size for f in files if f.exists()) / 1e6, 3)


def write_manifest(folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Add the sha256 of every file under `folder` to `manifest` and write it atomically.

    Returns:
        The manifest as written.
    """
    manifest = {**manifest, "files": checksums(folder)}
    atomic_write_json(folder / MANIFEST, manifest)
    return manifest


def publish(
    tmp: Path, out: Path, manifest: dict[str, Any], *, bm25: bool, only_if_present: bool = False
) -> dict[str, Any]:
    """Finish temp folder `tmp` and swap it in as `out` (call under `writer_lock`).

    Writes the BM25 index (`refresh_bm25`), then the manifest with the checksums of
    everything in the folder, then swaps.

    Returns:
        The manifest as written.
    """
    refresh_bm25(tmp, bm25=bm25, only_if_present=only_if_present)
    written = write_manifest(tmp, manifest)
    swap_in(tmp, out)
    return written


def check_replaceable(out: Path) -> None:
    """Refuse to replace a path that is not an index folder.

    Raises:
        DataError: `out` exists and is a file, or a non-empty folder without manifest.
    """
    if not out.exists():
        return
    if not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file()):
        raise DataError(
            f"--out {out} exists and is not an index folder; pass a new path or an "
            "existing index folder to replace"
        )


def swap_in(tmp: Path, out: Path) -> None:
    """Publish `tmp` as `out` (call under `writer_lock`); `tmp` is consumed.

    See `search.atomic.swap_in_folder`: readers see the old folder or the new one.
    """
    swap_in_folder(tmp, out)
