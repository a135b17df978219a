"""Build an index folder from a stream of documents (see `search.index_folder`).

`build_index` runs four stages, each a function of its own:

1. **encode** (`encode_corpus`): documents are read as a stream, checked (bad records
   and duplicate ids counted or refused), given rows, written to the doc store and
   encoded in shards of `BuildOptions.shard_size` documents, each checkpointed
   (`indexer.shards`); a killed job skips shards already on disk when started again;
2. **assemble** (`assemble_index`): the index type is chosen (``auto``: by corpus size
   and memory budget, `indexer.factory`), trained on a sample, filled from the shards;
3. **measure** (`measure_quality`): recall@10 against exact search is measured on a
   sample of the vectors, and search parameters are tuned to a target recall;
4. **publish** (`publish_index`): the index is written with its manifest and the
   folder is swapped in atomically (`indexer.publish`); with
   `BuildOptions.vectors_out`, the shards' ids and vectors are written to a Parquet
   file first (`indexer.vectors_out`).

Encoding and filling run in this process (`indexer.executor.LocalExecutor`) or on a
Dask cluster (`indexer.dask_engine.DaskEngine`); both read and write the same shards.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from tqdm.auto import tqdm

from indexer.executor import Executor, LocalExecutor, Partition, fill_from_shards
from indexer.factory import (
    AUTO,
    choose_factory,
    default_memory_budget,
    is_ivf,
    ivf_lists,
    make_index,
    to_ondisk,
    train_size,
)
from indexer.options import BuildOptions
from indexer.publish import (
    check_replaceable,
    index_mb,
    publish,
    temp_folder,
    versions,
    writer_lock,
)
from indexer.quality import exact_neighbours, lower_bound, measure, probe_queries, tune
from indexer.shards import WorkDir, read_shard, shard_holds
from indexer.vectors_out import check_vectors_path, write_vectors
from search.corpus import ON_ERROR, ReadReport, Record, bad_record
from search.docstore import DocStore
from search.embed_cache import EmbeddingCache
from search.encoder import Encoder
from search.index_folder import (
    DOCSTORE_FILE,
    FORMAT_VERSION,
    INDEX_FILE,
    IVFDATA_FILE,
    index_chain,
    index_class,
    is_flat,
)
from search.types import DataError, document_text

logger = logging.getLogger(__name__)

Doc = tuple[str, str, str]  # (id, title, text)
RECALL_K = 10
_LOOKUP_BLOCK = 1000  # records whose ids are checked against the store together

__all__ = [
    "BuildOptions",
    "assemble",
    "assemble_index",
    "build_index",
    "encode_corpus",
    "make_index",
    "measure_quality",
    "publish_index",
]


def build_index(
    encoder: Encoder,
    docs: Iterable[Doc] | Iterable[Record],
    out: Path,
    options: BuildOptions | None = None,
    *,
    cache: EmbeddingCache | None = None,
    report: ReadReport | None = None,
    engine: Executor | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Encode `docs` with `encoder` and write an index folder at `out`, atomically.

    Args:
        encoder: The document encoder (its model hash goes into the manifest).
        docs: ``(id, title, text)`` tuples or `Record`\\ s (whose line numbers are
            then used in reports); ids must be unique.
        out: The index folder to create or replace.
        options: How to build (default `BuildOptions()`).
        cache: Embedding cache to read and fill (re-indexing the same corpus is free).
        report: The reader's report; duplicates are added, and it goes in the manifest.
        engine: The `Executor` that encodes and fills (default
            `indexer.executor.LocalExecutor`).
        **settings: `BuildOptions` fields that replace those of `options`, e.g.
            ``factory="HNSW32", progress=False``.

    Returns:
        The manifest written.

    Raises:
        DataError: no documents, a duplicate id in ``fail`` mode, or `out` is not an
            index folder.
        ValueError: bad options (unknown factory, a factory too large for the corpus, a
            `vectors_out` that is a folder or inside `out`).
        TypeError: a name in `settings` is not a `BuildOptions` field.
    """
    opts = replace(options or BuildOptions(), **settings)
    _validate(opts, encoder.dim, out)
    out = out.resolve()
    check_replaceable(out)
    t0 = time.perf_counter()
    executor = engine or LocalExecutor(encoder, batch_size=opts.batch_size, cache=cache)
    work = _open_work_dir(encoder, out, opts)
    try:
        encoded = encode_corpus(encoder, docs, work, executor, opts, report)
        built = assemble_index(work, encoded.count, encoder.dim, executor, opts)
        search = _quality(built, work, encoded.count, opts)
        save_index(built, work, ondisk=opts.ondisk)
        manifest = _manifest(encoder, opts, built, work, executor.name, encoded, search, report, t0)
        del built  # BM25 indexing and the swap do not need the index in memory
        manifest = publish_index(work, out, manifest, bm25=opts.bm25, vectors=opts.vectors_out)
        work.close(remove=True)
        logger.info(summary(manifest))
        return manifest
    finally:
        work.close()


def _quality(
    built: Assembled, work: WorkDir, count: int, opts: BuildOptions
) -> tuple[dict[str, float], dict[str, Any]]:
    """Stage 3: the search parameters that reach the target recall, and the measured
    quality (`measure_quality`)."""
    return measure_quality(
        built.index,
        work,
        count,
        target=opts.target_recall,
        params=opts.search_params,
        queries=opts.recall_queries,
        seed=opts.seed,
    )


def _validate(options: BuildOptions, dim: int, out: Path) -> None:
    if options.factory != AUTO:
        make_index(options.factory, dim)  # raises on nonsense before hours of encoding
    if options.shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {options.shard_size}")
    if options.on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}, got {options.on_error!r}")
    if not 0 < options.target_recall <= 1:
        raise ValueError(f"target_recall must be in (0, 1], got {options.target_recall}")
    if options.vectors_out is not None:
        check_vectors_path(options.vectors_out, out)


def default_work_dir(out: Path) -> Path:
    """Where a build of `out` keeps its checkpoints: ``.<name>.work`` beside it."""
    return out.parent / f".{out.name}.work"


def _open_work_dir(encoder: Encoder, out: Path, options: BuildOptions) -> WorkDir:
    """The job's work folder; its checkpoints are reused only by the same job."""
    job = {
        "format": 1,
        "input": options.resume_key,
        "model_hash": encoder.model_hash,
        "backend": encoder.backend,
        "dim": encoder.dim,
        "shard_size": options.shard_size,
        "on_error": options.on_error,
    }
    path = options.work_dir or default_work_dir(out)
    return WorkDir(path, job, resume=options.resume_key is not None)


@dataclass(frozen=True)
class Encoded:
    """What the encode stage left in the work folder.

    Attributes:
        count: Documents in the doc store, each in exactly one shard.
        resumed: Documents whose shards an interrupted run had already written.
        seconds: Wall-clock time of the stage.
    """

    count: int
    resumed: int
    seconds: float


class _Skipped:
    """Counts documents whose shards are already on disk, moving the bar past them."""

    def __init__(self, bar: tqdm) -> None:
        self.bar = bar
        self.count = 0

    def __call__(self, n: int) -> None:
        self.count += n
        self.bar.update(n)


def encode_corpus(
    encoder: Encoder,
    docs: Iterable[Doc] | Iterable[Record],
    work: WorkDir,
    executor: Executor,
    options: BuildOptions,
    report: ReadReport | None,
) -> Encoded:
    """Stage 1: fill the doc store and have `executor` encode every missing shard.

    Raises:
        DataError: no documents, a duplicate id in ``fail`` mode, or checkpoints that
            do not cover the documents.
    """
    t0 = time.perf_counter()
    store = DocStore(work.store_path, readonly=False)
    bar = tqdm(
        total=options.total,
        desc=f"encoding ({encoder.name})",
        unit="doc",
        disable=not options.progress,
    )
    skipped = _Skipped(bar)
    try:
        parts = _plan(docs, store, work, on_error=options.on_error, report=report, skipped=skipped)
        executor.encode(parts, work.shard_dir, bar.update)
        count = len(store)
    finally:
        bar.close()
        store.close()
    seconds = time.perf_counter() - t0
    if count == 0:
        raise DataError("the corpus holds no documents; nothing to index")
    if sum(len(read_shard(work.shard_dir, n)[1]) for n in work.shards()) != count:
        raise DataError(
            f"{work.path}: the checkpoints do not cover the {count} documents; delete "
            "that folder and index again"
        )
    return Encoded(count, skipped.count, seconds)


def _records(docs: Iterable[Doc] | Iterable[Record]) -> Iterator[Record]:
    for i, doc in enumerate(docs, 1):
        if isinstance(doc, Record):
            yield doc
        else:
            yield Record(str(doc[0]), str(doc[1]), str(doc[2]), i)


def _plan(
    docs: Iterable[Doc] | Iterable[Record],
    store: DocStore,
    work: WorkDir,
    *,
    on_error: str,
    report: ReadReport | None,
    skipped: Callable[[int], None],
) -> Iterator[Partition]:
    """Give rows to documents, fill the store, and yield partitions still to encode.

    Rows are given in stream order to documents that are not duplicates, so a rerun
    on the same input gives every document the same row: store writes are replayed
    idempotently and shards already on disk are skipped (`skipped` is told their size).
    """
    row = 0
    pending: list[tuple[int, str]] = []  # (row, text) of the partition being filled
    records = _records(docs)
    while block := list(islice(records, _LOOKUP_BLOCK)):
        stored = store.rows_of([r.id for r in block])
        fresh: dict[str, int] = {}
        inserts = []
        for rec in block:
            earlier = fresh.get(rec.id, stored.get(rec.id, row))
            if earlier != row:
                bad_record(
                    rec.source or "input",
                    rec.line,
                    "duplicate id",
                    f"duplicate document id {rec.id!r}, first seen at row {earlier}",
                    on_error,
                    report,
                )
                continue
            fresh[rec.id] = row
            if stored.get(rec.id) != row:
                inserts.append((row, rec.id, rec.title, rec.text))
            pending.append((row, document_text(rec.title, rec.text)))
            row += 1
            if len(pending) == work.shard_size:
                yield from _partition(pending, work, skipped)
                pending = []
        store.add(inserts)  # committed per block: a killed job replays at most a block
    if pending:
        yield from _partition(pending, work, skipped)


def _partition(
    pending: list[tuple[int, str]], work: WorkDir, skipped: Callable[[int], None]
) -> Iterator[Partition]:
    rows = np.fromiter((r for r, _ in pending), dtype=np.int64, count=len(pending))
    number = int(rows[0]) // work.shard_size
    if shard_holds(work.shard_dir, number, rows):
        skipped(len(rows))
        return
    yield Partition(number, rows, [t for _, t in pending])


@dataclass(frozen=True)
class Assembled:
    """The filled index of the assemble stage.

    Attributes:
        index: The trained, filled index (inner product on unit vectors).
        factory: Its factory string (what ``auto`` chose, if asked).
        seconds: Wall-clock time of training and filling.
    """

    index: faiss.Index
    factory: str
    seconds: float


def assemble_index(
    work: WorkDir, count: int, dim: int, executor: Executor, options: BuildOptions
) -> Assembled:
    """Stage 2: choose the factory (for ``auto``), then train and fill the index."""
    factory = options.factory
    if factory == AUTO:
        factory = choose_factory(count, dim, options.max_memory or default_memory_budget())
    for stale in (INDEX_FILE, IVFDATA_FILE):  # left by a job killed after encoding
        (work.path / stale).unlink(missing_ok=True)
    t0 = time.perf_counter()
    index = assemble(
        work, count, dim, factory, executor, seed=options.seed, progress=options.progress
    )
    return Assembled(index, factory, time.perf_counter() - t0)


def _sample_rows(count: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(count, size=min(size, count), replace=False)).astype(np.int64)


def assemble(
    work: WorkDir,
    count: int,
    dim: int,
    factory: str,
    engine: Executor | None = None,
    *,
    seed: int = 0,
    progress: bool = False,
) -> faiss.Index:
    """Make the index, train it on a seeded sample of the shards, fill it from all of them.

    The filling is done by `engine` (default: in this process).

    Raises:
        ValueError: the factory needs more training vectors than the corpus holds.
    """
    index = make_index(factory, dim)
    if not index.is_trained:
        nlist = next((int(i.nlist) for i in _ivfs(index)), ivf_lists(count))
        sample = work.vectors_of(_sample_rows(count, train_size(count, nlist), seed))
        logger.info("training %s on %d vectors", factory, len(sample))
        if len(sample) < nlist:
            raise ValueError(
                f"{factory} has {nlist} lists but the corpus holds only {count} documents; "
                "use fewer lists (or --factory auto)"
            )
        index.train(sample)
        del sample
    if engine is None:
        return fill_from_shards(index, work, progress)
    return engine.fill(index, work, progress)


def _ivfs(index: faiss.Index) -> list[faiss.IndexIVF]:
    return [i for i in index_chain(index) if isinstance(i, faiss.IndexIVF)]


def measure_quality(
    index: faiss.Index,
    work: WorkDir,
    count: int,
    *,
    target: float,
    params: dict[str, float] | None,
    queries: int,
    seed: int,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Search parameters (tuned to `target` unless given) and the recall@10 they reach.

    The queries are probes near `queries` vectors sampled from the shards (seeded,
    see `indexer.quality.probe_queries`); their exact neighbours come from a pass
    over all shards.

    Returns:
        ``(params, info)``: `info` holds ``recall_at_10`` and how it was measured.
    """
    k = min(RECALL_K, count - 1)
    if k < 1 or is_flat(index):  # exact search: nothing to measure or tune
        why = "exact search" if k >= 1 else "too few documents"
        return dict(params or {}), {"recall_at_10": 1.0, "k": k, "queries": 0, "method": why}
    qrows = _sample_rows(count, queries, seed + 1)
    base = work.vectors_of(qrows)
    near, _ = exact_neighbours(base, work.iter_shards(), 2)  # itself, then its nearest
    probes = probe_queries(base, near[:, 1], seed + 2)
    truth = exact_neighbours(probes, work.iter_shards(), k)[1]
    if params is not None:
        chosen, tried = dict(params), list[dict[str, Any]]()
        per_query = measure(index, probes, truth, chosen)
    else:
        chosen, per_query, tried = tune(index, probes, truth, target)
    info = {
        "recall_at_10": round(float(per_query.mean()), 4),
        "recall_at_10_low95": round(lower_bound(per_query), 4),
        "k": k,
        "queries": len(qrows),
        "target": target,
        "method": "probe queries near sampled vectors (indexer.quality.probe_queries) vs exact",
        "tried": tried,
    }
    return chosen, info


def save_index(built: Assembled, work: WorkDir, *, ondisk: bool) -> None:
    """Write the index into the work folder; with `ondisk`, an IVF index's lists go to
    ``index.ivfdata`` beside it."""
    if ondisk and is_ivf(built.index):
        to_ondisk(built.index, work.path / IVFDATA_FILE)
    elif ondisk:
        logger.info("%s is not IVF: its vectors are not written on disk separately", built.factory)
    faiss.write_index(built.index, str(work.path / INDEX_FILE))


def _manifest(
    encoder: Encoder,
    options: BuildOptions,
    built: Assembled,
    work: WorkDir,
    executor: str,
    encoded: Encoded,
    search: tuple[dict[str, float], dict[str, Any]],
    report: ReadReport | None,
    started: float,
) -> dict[str, Any]:
    """The index manifest (`search.index_folder`) but for the files' checksums.

    Args:
        search: The search parameters and the recall measured with them
            (`measure_quality`).
        started: `time.perf_counter` when the build started.
    """
    seconds = time.perf_counter() - started
    params, quality = search
    fresh = encoded.count - encoded.resumed
    return {
        "format_version": FORMAT_VERSION,
        "model": {
            "name": encoder.name,
            "path": options.model_path or _folder_of(encoder),
            "hash": encoder.model_hash,
            "backend": encoder.backend,
        },
        "dim": encoder.dim,
        "metric": "inner_product",
        "normalized": True,
        "factory": built.factory,
        "factory_requested": options.factory,
        "index_class": index_class(built.index),
        "count": encoded.count,
        "ntotal": int(built.index.ntotal),
        "tombstones": 0,
        "ondisk": (work.path / IVFDATA_FILE).exists(),
        "search_params": params,
        "recall_at_10": quality["recall_at_10"],
        "recall": quality,
        "index_mb": index_mb(work.path),
        "build_seconds": round(seconds, 3),
        "docs_per_s": round(fresh / encoded.seconds, 2) if fresh else None,
        "build": {
            "engine": executor,
            "encoded_docs": fresh,
            "resumed_docs": encoded.resumed,
            "encode_seconds": round(encoded.seconds, 3),
            "assemble_seconds": round(built.seconds, 3),
            "shard_size": options.shard_size,
        },
        "input": (report or ReadReport(read=encoded.count)).as_dict(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": versions(),
    }


def publish_index(
    work: WorkDir,
    out: Path,
    manifest: dict[str, Any],
    *,
    bm25: bool,
    vectors: Path | None = None,
) -> dict[str, Any]:
    """Stage 4: with `vectors`, write the shards' ids and vectors there as Parquet
    (`indexer.vectors_out.write_vectors`); then move the saved index and the doc
    store into a temp folder beside `out`; `indexer.publish.publish` adds the BM25
    index and the manifest and swaps it in.

    Returns:
        The manifest as written (with the files' checksums).
    """
    if vectors is not None:  # while the doc store, which holds the ids, is in `work`
        write_vectors(work, vectors, manifest)
    with writer_lock(out):
        check_replaceable(out)
        tmp = temp_folder(out)
        try:
            os.replace(work.path / INDEX_FILE, tmp / INDEX_FILE)
            if (work.path / IVFDATA_FILE).exists():
                os.replace(work.path / IVFDATA_FILE, tmp / IVFDATA_FILE)
            os.replace(work.store_path, tmp / DOCSTORE_FILE)
            return publish(tmp, out, manifest, bm25=bm25)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _folder_of(encoder: Encoder) -> str | None:
    folder = getattr(encoder, "folder", None)  # torch and ONNX encoders keep their folder
    return str(folder) if folder is not None else None


def summary(manifest: dict[str, Any]) -> str:
    """One line for people: documents, time, docs/s, index size, recall estimate."""
    rate = manifest.get("docs_per_s")
    params = ", ".join(f"{k}={v:g}" for k, v in manifest.get("search_params", {}).items())
    return (
        f"{manifest['count']} documents in {manifest['build_seconds']:.1f} s "
        f"({'-' if rate is None else f'{rate:.1f}'} docs/s encoding), "
        f"{manifest['factory']} index {manifest['index_mb']:.1f} MB, "
        f"recall@10 {manifest['recall_at_10']:.3f} vs exact" + (f" ({params})" if params else "")
    )
