"""Choosing and making FAISS indexes: factory strings, memory estimates, the auto choice."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any

import faiss
import numpy as np

logger = logging.getLogger(__name__)

AUTO = "auto"
# Up to this many vectors exact search is fast enough and has perfect recall; beyond,
# IVF is chosen: it reaches the recall target sooner than HNSW (bench/index_scale.py),
# and it can delete vectors and memory-map its lists.
FLAT_MAX_DOCS = 50_000
# Peak RSS while building ~ BUILD_FACTOR x (index + training sample) + BUILD_BASE:
# list growth, the shard being added and the interpreter (fitted with
# bench/index_scale.py).
BUILD_FACTOR = 1.4
BUILD_BASE = 250 * 10**6
TRAIN_PER_LIST = 40  # k-means sample: FAISS warns below 39 points per centroid
MIN_TRAIN = 10_000

_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_UNITS |= {f"{u}b": v for u, v in _UNITS.items() if u not in ("", "b")}
_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_memory(text: str | int) -> int:
    """Bytes from ``4GB``, ``512MB``, ``2GiB`` or a plain number of bytes.

    Raises:
        ValueError: the text is not a size.
    """
    if isinstance(text, int):
        return text
    got = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", text)
    unit = got.group(2).lower() if got else ""
    if got is None or unit not in _UNITS:
        raise ValueError(f"{text!r} is not a memory size; write e.g. 4GB, 512MB or 2GiB")
    return int(float(got.group(1)) * _UNITS[unit])


def default_memory_budget() -> int:
    """Half of this machine's RAM: room for the index, the model and the OS cache."""
    import psutil

    return int(psutil.virtual_memory().total // 2)


def ivf_lists(n: int) -> int:
    """Inverted lists for `n` vectors: the power of two nearest 2·√n, with ≥ 40 per list."""
    target = 2 * math.sqrt(max(n, 1))
    nlist = 2 ** round(math.log2(target))
    while nlist > 1 and nlist * TRAIN_PER_LIST > n:
        nlist //= 2
    return max(1, min(nlist, 65536))


def train_size(n: int, nlist: int) -> int:
    """Vectors to train an IVF/PQ index on: 40 per list, at least 10k, at most `n`."""
    return min(n, max(TRAIN_PER_LIST * nlist, MIN_TRAIN))


def _code_bytes(part: str, d: int) -> float | None:
    """Bytes per vector of one encoding component (``Flat``, ``SQ8``, ``PQ48x4fs``…)."""
    fixed = {"Flat": 4 * d, "SQfp16": 2 * d, "SQ8": d, "SQ6": 0.75 * d, "SQ4": d / 2}
    if part in fixed:
        return fixed[part]
    pq = re.fullmatch(r"PQ(\d+)(?:x(\d+))?(fs)?", part)
    if pq:
        return int(pq.group(1)) * int(pq.group(2) or 8) / 8
    return None


def estimate_memory(factory: str, n: int, d: int) -> int | None:
    """Approximate RAM of an index of `n` `d`-dim vectors, or None when unknown.

    Counts codes, ids, graph links and refine vectors; small fixed parts (centroids)
    are included, allocator slack is not.
    """
    parts = [p.strip() for p in factory.split(",")]
    per_vec = 0.0
    fixed = 0.0
    for i, part in enumerate(parts):
        if part in ("IDMap", "IDMap2"):
            per_vec += 8 if part == "IDMap" else 48
            continue
        if pca := re.fullmatch(r"(?:PCA|PCAR|OPQ\d+_?)(\d+)", part):
            d = int(pca.group(1))
            continue
        ivf = re.fullmatch(r"IVF(\d+)", part)
        hnsw = re.fullmatch(r"HNSW(\d+)", part)
        refine = re.fullmatch(r"Refine\((.+)\)|RFlat", part)
        if ivf:
            fixed += int(ivf.group(1)) * d * 4
            per_vec += 8  # ids in the inverted lists
        elif hnsw:
            per_vec += 2 * int(hnsw.group(1)) * 4 * 1.1 + (4 * d if i == len(parts) - 1 else 0)
        elif refine:
            code = _code_bytes(refine.group(1) or "Flat", d)
            if code is None:
                return None
            per_vec += code
        else:
            code = _code_bytes(part, d)
            if code is None:
                return None
            per_vec += code
    if not parts[0].startswith(("IVF", "IDMap")):
        per_vec += 48  # make_index wraps it in IDMap2
    return int(per_vec * n + fixed)


def _compressed(d: int, nlist: int) -> list[str]:
    """Compressed IVF candidates, largest first.

    4-bit PQ codes re-ranked with fp16 vectors, then 8-bit scalar codes (smaller and
    better than PQ re-ranked with 8-bit vectors in the bench), then PQ alone (recall
    ~0.4: a last resort).
    """
    if d % 4:
        return [f"IVF{nlist},SQfp16", f"IVF{nlist},SQ8", f"IVF{nlist},SQ4"]
    return [
        f"IVF{nlist},PQ{d // 2}x4fs,Refine(SQfp16)",
        f"IVF{nlist},SQ8",
        f"IVF{nlist},PQ{d // 4}x4fs",
    ]


def candidates(n: int, d: int) -> list[str]:
    """Factories the auto choice considers for `n` vectors, best first."""
    nlist = ivf_lists(n)
    first = ["Flat"] if n <= FLAT_MAX_DOCS else []
    return [*first, f"IVF{nlist},Flat", *_compressed(d, nlist)]


def build_memory(factory: str, n: int, d: int) -> int | None:
    """Approximate peak RSS of building `factory` over `n` vectors (see `BUILD_FACTOR`)."""
    size = estimate_memory(factory, n, d)
    if size is None:
        return None
    train = 0 if factory == "Flat" else train_size(n, ivf_lists(n)) * d * 4
    return int(BUILD_FACTOR * (size + train) + BUILD_BASE)


def choose_factory(n: int, d: int, max_memory: int) -> str:
    """The auto choice: the best index for `n` `d`-dim vectors whose build fits `max_memory`.

    Exact ``Flat`` up to 50k vectors, then ``IVF{nlist},Flat``; when its build does not
    fit, IVF with 4-bit PQ codes re-ranked by fp16 vectors, then 8-bit scalar codes,
    then PQ alone. Search parameters are tuned after the build (`indexer.quality`).

    Raises:
        ValueError: not even the smallest candidate fits.
    """
    need = {}
    for factory in candidates(n, d):
        size = build_memory(factory, n, d)
        assert size is not None  # every candidate is a known shape
        need[factory] = size
        if size <= max_memory:
            logger.info("auto index for %d x %d: %s (build ~%.0f MB)", n, d, factory, size / 1e6)
            return factory
    smallest = min(need, key=need.__getitem__)
    raise ValueError(
        f"no index of {n} {d}-dim vectors fits in {max_memory / 1e6:.0f} MB (the smallest, "
        f"{smallest}, needs ~{need[smallest] / 1e6:.0f} MB to build); raise --max-memory "
        "or pass --factory yourself"
    )


def make_index(factory: str, dim: int) -> faiss.Index:
    """An empty FAISS index for inner product over normalised vectors, taking our own ids.

    Indexes that cannot hold arbitrary ids (Flat, HNSW, refine) are wrapped in
    ``IDMap2``; IVF indexes take ids natively.

    Raises:
        ValueError: FAISS does not understand `factory` (or it is ``auto``).
    """
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise ValueError(
            f"FAISS cannot build factory string {factory!r} for {dim}-dim vectors; try auto, "
            "Flat, HNSW32, IVF1024,Flat or IVF1024,PQ48x4fs,RFlat"
        ) from exc
    top = faiss.downcast_index(index)
    if isinstance(top, faiss.IndexPreTransform):
        top = faiss.downcast_index(top.index)
    if isinstance(top, (faiss.IndexIVF, faiss.IndexIDMap, faiss.IndexIDMap2)):
        return index
    return faiss.index_factory(dim, f"IDMap2,{factory}", faiss.METRIC_INNER_PRODUCT)


def is_ivf(index: faiss.Index) -> bool:
    """Whether `index` is an IVF index (possibly behind a pre-transform)."""
    try:
        faiss.extract_index_ivf(index)
    except RuntimeError:
        return False
    return True


def to_ondisk(index: faiss.Index, ivfdata: Path) -> None:
    """Move the inverted lists of an IVF index into a memory-mapped file, in place.

    Afterwards ``faiss.write_index`` writes only the header and centroids; readers
    open it with ``IO_FLAG_ONDISK_SAME_DIR`` and page the lists in on demand, so the
    index serves with little RAM. The file must stay beside the index file.
    """
    ivf = faiss.extract_index_ivf(index)
    ondisk: Any = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(ivfdata))
    lists = faiss.InvertedListsPtrVector()  # type: ignore[attr-defined]
    lists.push_back(ivf.invlists)
    ondisk.merge_from_multiple(lists.data(), lists.size(), False)
    ivf.replace_invlists(ondisk, True)
    ondisk.this.disown()  # now owned by the index


def can_remove(index: faiss.Index) -> bool:
    """Whether `index` deletes vectors (IVF, Flat) or needs tombstones (HNSW, refine)."""
    try:
        index.remove_ids(faiss.IDSelectorBatch(np.zeros(0, dtype=np.int64)))
    except RuntimeError:
        return False
    return True
