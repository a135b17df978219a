"""Build an index folder from a stream of documents (see `search.index_folder`).

The job runs in three steps, each restartable:

1. **encode**: documents are read as a stream, checked (bad records and duplicate
   ids counted or refused), given rows, written to the doc store and encoded in
   shards of `shard_size` documents, each checkpointed (`indexer.shards`); a killed
   job skips shards already on disk when started again;
2. **assemble**: the index type is chosen (``auto``: by corpus size and memory
   budget, `indexer.factory`), trained on a sample, filled from the shards;
3. **measure and publish**: recall@10 against exact search is measured on a sample
   of the vectors, search parameters are tuned to a target recall, and the folder
   is written with its manifest and swapped in atomically (`indexer.publish`).

Encoding and filling run in this process (`indexer.executor.LocalExecutor`) or on a
Dask cluster (`indexer.dask_engine.DaskEngine`); both read and write the same shards.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
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

__all__ = ["assemble", "build_index", "make_index", "measure_quality"]


def _validate(factory: str, dim: int, shard_size: int, on_error: str, target_recall: float) -> None:
    if factory != AUTO:
        make_index(factory, dim)  # raises on nonsense before hours of encoding
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
    if not 0 < target_recall <= 1:
        raise ValueError(f"target_recall must be in (0, 1], got {target_recall}")


def default_work_dir(out: Path) -> Path:
    """Where a build of `out` keeps its checkpoints: ``.<name>.work`` beside it."""
    return out.parent / f".{out.name}.work"


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


def build_index(
    encoder: Encoder,
    docs: Iterable[Doc] | Iterable[Record],
    out: Path,
    *,
    factory: str = AUTO,
    batch_size: int = 32,
    shard_size: int = 1024,
    cache: EmbeddingCache | None = None,
    model_path: str | None = None,
    total: int | None = None,
    progress: bool = True,
    max_memory: int | None = None,
    on_error: str = "fail",
    report: ReadReport | None = None,
    resume_key: str | None = None,
    work_dir: Path | None = None,
    engine: Executor | None = None,
    target_recall: float = 0.95,
    search_params: dict[str, float] | None = None,
    recall_queries: int = 300,
    ondisk: bool = False,
    bm25: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Encode `docs` with `encoder` and write an index folder at `out`, atomically.

    Args:
        encoder: The document encoder (its model hash goes into the manifest).
        docs: ``(id, title, text)`` tuples or `Record`\\ s (whose line numbers are
            then used in reports); ids must be unique.
        out: The index folder to create or replace.
        factory: FAISS factory string, or ``auto`` (see `indexer.factory.choose_factory`).
        batch_size: Texts per forward pass.
        shard_size: Documents per checkpointed shard.
        cache: Embedding cache to read and fill (re-indexing the same corpus is free).
        model_path: Where the model lives, recorded so `Retriever.open` can find it
            (default: the encoder's folder).
        total: Number of documents, when known, for the progress bar's ETA.
        progress: Show progress bars.
        max_memory: RAM budget in bytes for the index (``auto``); default half the RAM.
        on_error: ``fail`` on the first duplicate id, or ``skip`` duplicates and count them
            in `report` (bad records are handled by the reader, see `search.corpus`).
        report: The reader's report; duplicates are added, and it goes in the manifest.
        resume_key: Identity of the input (e.g. `search.corpus.fingerprint`); when
            given, checkpoints of an interrupted job with the same key and settings are
            reused, else the job starts over.
        work_dir: Checkpoint folder (default ``.<out>.work`` beside `out`); on a
            cluster it must be shared with the workers.
        engine: The `Executor` that encodes and fills (default
            `indexer.executor.LocalExecutor`).
        target_recall: recall@10 the tuned search parameters must reach on the sample
            (its 95% lower confidence bound, see `indexer.quality.tune`).
        search_params: Search parameters to store instead of tuning them.
        recall_queries: Sampled vectors the recall is measured on.
        ondisk: Keep an IVF index's inverted lists in ``index.ivfdata``, memory-mapped
            when the folder is loaded (serving needs little RAM); ignored for other types.
        bm25: Also write the lexical index (`indexer.publish.write_extras`).
        seed: Seed of the training and recall samples.

    Returns:
        The manifest written.

    Raises:
        DataError: no documents, a duplicate id in ``fail`` mode, or `out` is not an
            index folder.
        ValueError: bad options (unknown factory, a factory too large for the corpus).
    """
    _validate(factory, encoder.dim, shard_size, on_error, target_recall)
    out = out.resolve()
    check_replaceable(out)
    t0 = time.perf_counter()
    engine = engine or LocalExecutor(encoder, batch_size=batch_size, cache=cache)
    job = {
        "format": 1,
        "input": resume_key,
        "model_hash": encoder.model_hash,
        "backend": encoder.backend,
        "dim": encoder.dim,
        "shard_size": shard_size,
        "on_error": on_error,
    }
    work = WorkDir(work_dir or default_work_dir(out), job, resume=resume_key is not None)
    try:
        store = DocStore(work.store_path, readonly=False)
        bar = tqdm(total=total, desc=f"encoding ({encoder.name})", unit="doc", disable=not progress)
        resumed = [0]

        def skipped(n: int) -> None:
            resumed[0] += n
            bar.update(n)

        try:
            parts = _plan(docs, store, work, on_error=on_error, report=report, skipped=skipped)
            engine.encode(parts, work.shard_dir, bar.update)
            count = len(store)
        finally:
            bar.close()
            store.close()
        encode_seconds = time.perf_counter() - t0
        if count == 0:
            raise DataError("the corpus holds no documents; nothing to index")
        if sum(len(read_shard(work.shard_dir, n)[1]) for n in work.shards()) != count:
            raise DataError(
                f"{work.path}: the checkpoints do not cover the {count} documents; delete "
                "that folder and index again"
            )
        chosen = factory
        if factory == AUTO:
            chosen = choose_factory(count, encoder.dim, max_memory or default_memory_budget())
        for stale in (INDEX_FILE, IVFDATA_FILE):  # left by a job killed after encoding
            (work.path / stale).unlink(missing_ok=True)
        t1 = time.perf_counter()
        index = assemble(work, count, encoder.dim, chosen, engine, seed=seed, progress=progress)
        assemble_seconds = time.perf_counter() - t1
        params, quality = measure_quality(
            index,
            work,
            count,
            target=target_recall,
            params=search_params,
            queries=recall_queries,
            seed=seed,
        )
        if ondisk and is_ivf(index):
            to_ondisk(index, work.path / IVFDATA_FILE)
        elif ondisk:
            logger.info("%s is not IVF: its vectors are not written on disk separately", chosen)
        faiss.write_index(index, str(work.path / INDEX_FILE))
        seconds = time.perf_counter() - t0
        encoded = count - resumed[0]
        manifest: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "model": {
                "name": encoder.name,
                "path": model_path or _folder_of(encoder),
                "hash": encoder.model_hash,
                "backend": encoder.backend,
            },
            "dim": encoder.dim,
            "metric": "inner_product",
            "normalized": True,
            "factory": chosen,
            "factory_requested": factory,
            "index_class": index_class(index),
            "count": count,
            "ntotal": int(index.ntotal),
            "tombstones": 0,
            "ondisk": (work.path / IVFDATA_FILE).exists(),
            "search_params": params,
            "recall_at_10": quality["recall_at_10"],
            "recall": quality,
            "index_mb": index_mb(work.path),
            "build_seconds": round(seconds, 3),
            "docs_per_s": round(encoded / encode_seconds, 2) if encoded else None,
            "build": {
                "engine": engine.name,
                "encoded_docs": encoded,
                "resumed_docs": resumed[0],
                "encode_seconds": round(encode_seconds, 3),
                "assemble_seconds": round(assemble_seconds, 3),
                "shard_size": shard_size,
            },
            "input": (report or ReadReport(read=count)).as_dict(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "versions": versions(),
        }
        del index
        with writer_lock(out):
            check_replaceable(out)
            tmp = temp_folder(out)
            try:
                os.replace(work.path / INDEX_FILE, tmp / INDEX_FILE)
                if (work.path / IVFDATA_FILE).exists():
                    os.replace(work.path / IVFDATA_FILE, tmp / IVFDATA_FILE)
                os.replace(work.store_path, tmp / DOCSTORE_FILE)
                manifest = publish(tmp, out, manifest, bm25=bm25)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        work.close(remove=True)
        logger.info(summary(manifest))
        return manifest
    finally:
        work.close()


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
