"""The index folder format, reading side.

An index folder holds::

    manifest.json   what made it: model name/path/hash, dim, metric, factory, count,
                    search parameters, recall estimate, versions, and the sha256 of
                    every other file in the folder (recursively)
    index.faiss     FAISS index over L2-normalised vectors (inner product = cosine),
                    vector ids = ``row`` of docs.sqlite
    index.ivfdata   (IVF built with ``ondisk``) the inverted lists, memory-mapped
    docs.sqlite     the doc store and id map (row, id, title, text per live document;
                    tombstoned rows), see `search.docstore`
    bm25/           (optional) a lexical index written beside the dense one

Folders are written whole into a temp folder and swapped in (see `indexer.publish`),
so a reader sees one complete version or the next, never a mix.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import faiss
import numpy as np

from search.assets import sha256_file
from search.docstore import DocStore
from search.types import DataError

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
INDEX_FILE = "index.faiss"
IVFDATA_FILE = "index.ivfdata"
DOCSTORE_FILE = "docs.sqlite"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # format 1: no tombstones table, no search parameters
_LOAD_TRIES = 20

# Search parameters an index chain takes, by the FAISS class that reads them.
SEARCH_PARAMS = {"nprobe": "IVF", "efSearch": "HNSW", "k_factor": "Refine"}


@dataclass
class IndexFolder:
    """A loaded index folder.

    Attributes:
        path: The folder.
        manifest: Parsed ``manifest.json``.
        index: The FAISS index (ids are doc store rows).
        store: The doc store.
        tombstones: Rows in `index` whose documents are gone (sorted int64).
    """

    path: Path
    manifest: dict[str, Any]
    index: faiss.Index
    store: DocStore
    tombstones: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    _exclude: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if len(self.tombstones):
            batch = faiss.IDSelectorBatch(self.tombstones)
            self._exclude = (faiss.IDSelectorNot(batch), batch)  # keep both alive

    @property
    def model_hash(self) -> str:
        return str(self.manifest["model"]["hash"])

    @property
    def count(self) -> int:
        """Live documents."""
        return int(self.manifest["count"])

    @property
    def search_params(self) -> dict[str, float]:
        """Search parameters stored at build time (``nprobe``, ``efSearch``, ``k_factor``)."""
        return dict(self.manifest.get("search_params") or {})

    def search_parameters(
        self, overrides: Mapping[str, float] | None = None, k: int = 0
    ) -> tuple[faiss.SearchParameters | None, bool, list[Any]]:
        """FAISS search parameters: the stored ones updated with `overrides`.

        Args:
            overrides: Values replacing the stored ones for this search.
            k: Results wanted; HNSW's ``efSearch`` is raised to at least `k`.

        Returns:
            ``(params, excludes_tombstones, keep_alive)``: `params` to pass to
            ``index.search`` (None when there is nothing to set); whether FAISS itself
            skips tombstoned rows (else the caller must filter); objects that must
            outlive the search call.
        """
        wanted = {**self.search_params, **(overrides or {})}
        exclude = self._exclude[0] if self._exclude is not None else None
        return make_search_params(self.index, wanted, exclude, k=k)

    def close(self) -> None:
        self.store.close()


def index_chain(index: faiss.Index) -> Iterator[faiss.Index]:
    """The index and the indexes it wraps, outermost first."""
    idx = faiss.downcast_index(index)
    while True:
        yield idx
        if isinstance(idx, (faiss.IndexIDMap, faiss.IndexIDMap2, faiss.IndexPreTransform)):
            idx = faiss.downcast_index(idx.index)
        elif isinstance(idx, faiss.IndexRefine):
            idx = faiss.downcast_index(idx.base_index)
        else:
            return


def index_kind(index: faiss.Index) -> str:
    """``IVF``, ``HNSW``, ``Refine``, or the FAISS class name of one link of a chain."""
    if isinstance(index, faiss.IndexRefine):
        return "Refine"
    if isinstance(index, faiss.IndexIVF):
        return "IVF"
    if isinstance(index, faiss.IndexHNSW):
        return "HNSW"
    return type(index).__name__


def _check_params(params: Mapping[str, float], kinds: list[str]) -> None:
    """Raise ValueError unless every parameter is known and taken by an index of the
    chain whose kinds are `kinds`."""
    for name in params:
        if name not in SEARCH_PARAMS:
            raise ValueError(
                f"unknown search parameter {name!r}; use one of {', '.join(SEARCH_PARAMS)}"
            )
        if SEARCH_PARAMS[name] not in kinds:
            takes = [n for n, k in SEARCH_PARAMS.items() if k in kinds]
            raise ValueError(
                f"this index ({' > '.join(kinds)}) does not take {name!r}; "
                f"it takes {', '.join(takes) or 'no search parameters'}"
            )


def _chain_params(
    chain: list[faiss.Index],
    kinds: list[str],
    params: Mapping[str, float],
    k: int,
    keep: list[Any],
) -> faiss.SearchParameters | None:
    """The search parameters of the outermost index that takes any, nesting those of
    the inner ones (built innermost first); objects FAISS only borrows go to `keep`."""
    inner: faiss.SearchParameters | None = None
    for link, kind in zip(reversed(chain), reversed(kinds), strict=True):
        if kind == "IVF":
            inner = faiss.SearchParametersIVF()
            if "nprobe" in params:
                inner.nprobe = int(params["nprobe"])
        elif kind == "HNSW":
            hnsw: Any = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
            stored = cast(Any, link).hnsw.efSearch
            hnsw.efSearch = max(int(params.get("efSearch", stored)), k)
            inner = hnsw
        elif kind == "Refine":
            refine = faiss.IndexRefineSearchParameters()
            if "k_factor" in params:
                refine.k_factor = float(params["k_factor"])
            if inner is not None:
                refine.base_index_params = inner
                keep.append(inner)
            inner = refine
    return inner


def make_search_params(
    index: faiss.Index,
    params: Mapping[str, float],
    exclude: faiss.IDSelector | None = None,
    *,
    k: int = 0,
) -> tuple[faiss.SearchParameters | None, bool, list[Any]]:
    """Build FAISS search parameters for `index` from plain values.

    Args:
        index: Any index; wrappers (IDMap, PreTransform, Refine) are looked through.
        params: Any of ``nprobe`` (IVF), ``efSearch`` (HNSW), ``k_factor`` (Refine).
        exclude: A selector of ids to skip (tombstones), applied where FAISS can.
        k: Results wanted: HNSW explores at least `k` candidates (``efSearch >= k``),
            else it returns fewer than `k` hits.

    Returns:
        See `IndexFolder.search_parameters`.

    Raises:
        ValueError: a parameter is unknown or the index does not take it.
    """
    chain = list(index_chain(index))
    kinds = [index_kind(i) for i in chain]
    _check_params(params, kinds)
    keep: list[Any] = []
    inner = _chain_params(chain, kinds, params, k, keep)
    # FAISS skips selected ids inside the search, except below a Refine (it drops `sel`).
    use_sel = exclude is not None and "Refine" not in kinds
    if use_sel:
        inner = inner if inner is not None else faiss.SearchParameters()
        inner.sel = exclude
        keep.append(exclude)
    if inner is not None:
        keep.append(inner)
    return inner, use_sel, keep


def read_index_manifest(path: Path) -> dict[str, Any]:
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
    if manifest.get("format_version") not in READABLE_VERSIONS:
        raise DataError(
            f"{path}: index format {manifest.get('format_version')} is not supported "
            f"(expected one of {READABLE_VERSIONS}); rebuild the index with this version"
        )
    return manifest


# The old name, which bench/load.py imports.
read_manifest = read_index_manifest


def folder_files(folder: Path) -> list[str]:
    """Every file in an index folder except the manifest, as sorted relative POSIX paths."""
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.relative_to(folder).as_posix() != MANIFEST
    )


def checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file in `folder` (recursively), the manifest excepted."""
    return {rel: sha256_file(folder / rel) for rel in folder_files(folder)}


def verify_folder(path: Path) -> None:
    """Check every file of an index folder against the manifest's checksums.

    Raises:
        DataError: a file is missing, changed, or not listed in the manifest.
    """
    listed: dict[str, str] = read_index_manifest(path).get("files", {})
    actual = checksums(path)
    problems = [f"{f} missing" for f in sorted(set(listed) - set(actual))]
    problems += [f"{f} not in the manifest" for f in sorted(set(actual) - set(listed))]
    problems += [
        f"{f} changed" for f in sorted(set(listed) & set(actual)) if listed[f] != actual[f]
    ]
    if problems:
        raise DataError(
            f"{path} does not match its manifest ({'; '.join(problems)}); the folder was "
            "modified after it was written; rebuild it with `distilsearch index`"
        )


def load_index_folder(path: Path, *, mmap: bool = False) -> IndexFolder:
    """Load an index folder for searching.

    Args:
        path: The folder written by `indexer`.
        mmap: Memory-map the vectors instead of reading them into RAM where FAISS
            supports it: flat indexes (``IO_FLAG_MMAP_IFC``) and IVF indexes built with
            ``ondisk`` (their ``index.ivfdata`` is always mapped). Other types (HNSW,
            in-memory IVF, refine) are read into RAM. ``IO_FLAG_MMAP`` is never used on
            IVF: faiss-cpu 1.15.1 crashed searching an on-disk IVF index opened so.

    The files are read by name; if a writer swaps in a new version meanwhile (the
    manifest changed), loading starts again, so the parts always match.

    Raises:
        DataError: not an index folder.
    """
    for _ in range(_LOAD_TRIES):
        manifest = read_index_manifest(path)
        # ONDISK_SAME_DIR: find index.ivfdata beside index.faiss wherever the folder moved.
        flags = faiss.IO_FLAG_ONDISK_SAME_DIR
        if mmap and manifest.get("index_class", "").split(">")[-1].startswith("IndexFlat"):
            flags |= faiss.IO_FLAG_MMAP_IFC
        index = _read_faiss(path / INDEX_FILE, flags)
        store = DocStore(path / DOCSTORE_FILE)
        if read_index_manifest(path) == manifest:  # no new version was swapped in meanwhile
            break
        store.close()
    else:
        raise DataError(f"{path} kept changing while it was loaded; try again")
    if mmap and not flags & faiss.IO_FLAG_MMAP_IFC and not (path / IVFDATA_FILE).is_file():
        logger.info("%s: this index type is read into RAM (only flat and on-disk IVF map)", path)
    return IndexFolder(path, manifest, index, store, store.tombstones())


def _read_faiss(file: Path, flags: int) -> faiss.Index:
    """`faiss.read_index`, its C++ errors on a missing, cut or corrupt file made one
    `DataError` that names the file."""
    try:
        return faiss.read_index(str(file), flags)
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else "unreadable"
        raise DataError(
            f"{file}: FAISS cannot read this index ({reason}); rebuild it with `distilsearch index`"
        ) from exc


def index_class(index: faiss.Index) -> str:
    """The chain of FAISS classes of an index, e.g. ``IndexIDMap2>IndexHNSWFlat``."""
    return ">".join(type(i).__name__ for i in index_chain(index))


def is_flat(index: faiss.Index) -> bool:
    """Whether `index` is exact search over raw vectors (optionally with an id map)."""
    return all(
        isinstance(i, (faiss.IndexIDMap, faiss.IndexIDMap2, faiss.IndexFlat))
        for i in index_chain(index)
    )
