"""Vectors out: every document's id and vector as one Parquet file, for other tools.

`indexer.build.build_index` with `BuildOptions.vectors_out` writes it at publish time,
from the job's checkpointed shards (`indexer.shards`): the vectors the index was
filled with, in row order, so a job that was interrupted and resumed writes the same
file as one that was not. The file is written to a temp name beside its path and
replaces it atomically (`search.atomic.atomic_path`): a reader sees the old file or
the new one, and a job killed while writing leaves the old one.

Columns: ``id`` (string, the document id) and ``vector`` (fixed-size list of float32,
the model's dim, L2-normalised: inner product is cosine similarity). The schema's
metadata key ``distilsearch`` holds JSON naming the model (name, path, hash, backend),
``dim``, ``metric``, ``normalized`` and ``count``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from indexer.shards import WorkDir
from search.atomic import atomic_path
from search.docstore import DocStore
from search.types import DataError

logger = logging.getLogger(__name__)

__all__ = ["METADATA_KEY", "check_vectors_path", "vectors_schema", "write_vectors"]

METADATA_KEY = b"distilsearch"


def check_vectors_path(path: Path, out: Path) -> None:
    """Refuse a vectors path that cannot be written beside index folder `out`.

    Raises:
        ValueError: `path` is a folder, or lies inside `out` (which is replaced whole
            when the index is published).
    """
    path, out = path.resolve(), out.resolve()
    if path.is_dir():
        raise ValueError(
            f"--vectors-out {path} is a folder; pass a file path such as {path / 'vectors.parquet'}"
        )
    if path.is_relative_to(out):
        raise ValueError(
            f"--vectors-out {path} is inside the index folder {out}, which is replaced when "
            "the index is published; write it beside the folder instead"
        )


def vectors_schema(dim: int, about: dict[str, Any]) -> pa.Schema:
    """The file's schema: ``id`` string, ``vector`` fixed-size list of `dim` float32,
    and `about` as JSON under the metadata key `METADATA_KEY`."""
    return pa.schema(
        [("id", pa.string()), ("vector", pa.list_(pa.float32(), dim))],
        metadata={METADATA_KEY: json.dumps(about).encode("utf-8")},
    )


def write_vectors(work: WorkDir, path: Path, manifest: dict[str, Any]) -> int:
    """Write the id and vector of every document of `work`'s shards to Parquet `path`.

    Args:
        work: The job's work folder: complete shards and the doc store (which maps
            each shard row to its document id).
        path: The Parquet file to create or replace, atomically.
        manifest: The index's manifest; its model, dim, metric and count go into the
            file's metadata.

    Returns:
        The number of rows written.

    Raises:
        DataError: a shard row has no document in the doc store.
    """
    dim = int(manifest["dim"])
    about = {k: manifest.get(k) for k in ("model", "dim", "metric", "normalized", "count")}
    path = path.resolve()
    for stale in path.parent.glob(f".{path.name}.tmp-*"):  # left by a killed writer
        stale.unlink(missing_ok=True)
    store = DocStore(work.store_path)
    written = 0
    try:
        with atomic_path(path) as tmp, pq.ParquetWriter(tmp, vectors_schema(dim, about)) as out:
            for vecs, rows in work.iter_shards():
                out.write_table(_shard_table(store, np.asarray(vecs), rows, out.schema))
                written += len(rows)
    finally:
        store.close()
    logger.info("wrote %d vectors to %s", written, path)
    return written


def _shard_table(
    store: DocStore, vecs: np.ndarray, rows: np.ndarray, schema: pa.Schema
) -> pa.Table:
    """One shard's rows as a table of `schema`: ids from `store`, vectors as they are."""
    docs = store.by_rows([int(r) for r in rows])
    missing = [int(r) for r in rows if int(r) not in docs]
    if missing:
        raise DataError(
            f"rows {missing[:5]} of the checkpoints have no document in the doc store; "
            "delete the work folder and index again"
        )
    flat = pa.array(np.ascontiguousarray(vecs, dtype=np.float32).ravel(), type=pa.float32())
    vectors = pa.FixedSizeListArray.from_arrays(flat, vecs.shape[1])
    ids = pa.array([docs[int(r)][0] for r in rows], type=pa.string())
    return pa.Table.from_arrays([ids, vectors], schema=schema)
