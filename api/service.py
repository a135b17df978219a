"""The search service behind the routes: dense (micro-batched), BM25 and hybrid search,
OpenAI-compatible embeddings (micro-batched with the searches), document reads and
updates, and index reloads.

Routes hand it request bodies; it checks them against the settings
(`api.validation`), runs the work off the event loop where it blocks, and returns
response schemas.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np
from fastapi import HTTPException
from starlette.concurrency import run_in_threadpool

from api.embeddings import encode_vectors
from api.loaded_index import IndexHolder, LoadedIndex, LoadedModel, load_index, load_model
from api.metrics import Metrics
from api.microbatch import MicroBatcher
from api.schemas import (
    BatchSearchResponse,
    DocumentIn,
    DocumentOut,
    EmbeddingOut,
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbeddingUsage,
    HitOut,
    Info,
    Mode,
    ModelList,
    ModelOut,
    ReloadResult,
    SearchResponse,
    Timing,
    UpdateResult,
)
from api.settings import Settings
from api.validation import (
    check_dimensions,
    check_documents,
    check_embedding_input,
    check_k,
    check_queries,
    check_query,
)
from indexer.update import delete_documents, upsert_documents
from search.bm25_index import bm25_hits
from search.encoder import bulk_encoder
from search.hybrid import default_mode, fuse_hits
from search.types import DistilsearchError, Hit

logger = logging.getLogger(__name__)

STORAGE_FAILED = (
    "storage failure on the server: the index folder could not be updated, and the "
    "index served is unchanged; retry later, or ask the operator to check the server "
    "log and the disk"
)

NO_INDEX = (
    "no index is loaded: this server serves its encoder alone (started without --index), "
    "so POST /v1/embeddings and GET /v1/models answer but search and documents do not; "
    "to search, start it with --index INDEX_DIR"
)

# Where a search request's query and k sit, for 422 error locations.
_LOCS = {"body": (("body", "query"), ("body", "k")), "query": (("query", "q"), ("query", "k"))}


@dataclass
class Service:
    """Everything a request needs, built once per app in its lifespan.

    Attributes:
        settings: Service settings.
        holder: The current index, leased to requests.
        batcher: Encodes dense queries in micro-batches on its own thread.
        metrics: This app's Prometheus metrics.
        admin_lock: Serialises reloads and document updates.
        load_error: Why the first load failed (None while loading or once loaded).
        standalone: The model served alone, when the settings name no index (None
            while it loads, and always with an index: the index's model is served).
    """

    settings: Settings
    holder: IndexHolder
    batcher: MicroBatcher
    metrics: Metrics
    admin_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    load_error: str | None = None
    standalone: LoadedModel | None = None

    def index_dir(self) -> Path:
        """The index folder the settings name.

        Raises:
            HTTPException: 503 when the server serves its encoder alone.
        """
        if self.settings.index_dir is None:
            raise HTTPException(status_code=503, detail=NO_INDEX)
        return self.settings.index_dir

    def not_loaded(self) -> str:
        """Why the index (or the model served alone) cannot be used yet, for a 503."""
        what = "index" if self.settings.index_dir is not None else "model"
        if self.load_error is not None:
            return f"the {what} failed to load: {self.load_error}"
        return f"the {what} is not loaded yet; retry shortly"

    def require_bm25(self, loaded: LoadedIndex, mode: Mode) -> None:
        if loaded.bm25 is None:
            raise HTTPException(
                status_code=400,
                detail=(
                    f"mode {mode!r} needs a BM25 index: {loaded.bm25_error}. Search with "
                    "mode 'dense', or build it (indexer.update.write_bm25 on the index folder) "
                    "and POST /admin/reload"
                ),
            )

    async def search_request(
        self,
        loaded: LoadedIndex,
        query: str,
        k: int | None,
        mode: Mode | None,
        *,
        source: Literal["body", "query"] = "body",
    ) -> SearchResponse:
        """Check one query and `k` of a request (in its body or its URL), then search."""
        query_loc, k_loc = _LOCS[source]
        checked = check_query(query, self.settings, query_loc)
        return await self.search(loaded, checked, check_k(k, self.settings, k_loc), mode)

    async def search_batch(
        self, loaded: LoadedIndex, queries: Sequence[str], k: int | None, mode: Mode | None
    ) -> BatchSearchResponse:
        """Check and search several queries; their dense encodings share micro-batches."""
        checked = check_queries(queries, self.settings)
        hits = check_k(k, self.settings, ("body", "k"))
        t0 = time.perf_counter()
        results = await asyncio.gather(*(self.search(loaded, q, hits, mode) for q in checked))
        return BatchSearchResponse(results=list(results), took_ms=1000 * (time.perf_counter() - t0))

    async def search(
        self, loaded: LoadedIndex, query: str, k: int, mode: Mode | None
    ) -> SearchResponse:
        """Search one (already checked) query with `loaded`; no `mode`: hybrid where the
        index has BM25, else dense (`search.hybrid.default_mode`)."""
        t0 = time.perf_counter()
        if mode is None:
            mode = default_mode(loaded.bm25 is not None)
        if mode != "dense":
            self.require_bm25(loaded, mode)
        if mode == "dense":
            hits, timing = await self._dense(loaded, query, k)
        elif mode == "bm25":
            hits, bm25_ms = await run_in_threadpool(self._bm25, loaded, query, k)
            timing = Timing(bm25_ms=bm25_ms)
        else:
            hits, timing = await self._hybrid(loaded, query, k)
        self.metrics.queries.labels(mode=mode).inc()
        return SearchResponse(
            query=query,
            k=k,
            mode=mode,
            hits=[HitOut(id=h.id, score=h.score, title=h.title, snippet=h.snippet()) for h in hits],
            took_ms=1000 * (time.perf_counter() - t0),
            timing=timing,
        )

    async def _dense(self, loaded: LoadedIndex, query: str, k: int) -> tuple[list[Hit], Timing]:
        hits, bt = await self.batcher.search(loaded.retriever, query, k)
        return hits, Timing(
            queue_ms=bt.queue_ms,
            encode_ms=bt.encode_ms,
            search_ms=bt.search_ms,
            batch_size=bt.size,
        )

    def _bm25(self, loaded: LoadedIndex, query: str, k: int) -> tuple[list[Hit], float]:
        """BM25 hits (runs on a worker thread)."""
        assert loaded.bm25 is not None
        t0 = time.perf_counter()
        hits = bm25_hits(loaded.bm25, loaded.retriever.folder.store, query, k)
        seconds = time.perf_counter() - t0
        self.metrics.search.labels(kind="bm25").observe(seconds)
        return hits, 1000 * seconds

    async def _hybrid(self, loaded: LoadedIndex, query: str, k: int) -> tuple[list[Hit], Timing]:
        s = self.settings
        depth = max(k, s.hybrid_depth)
        (dense, timing), (sparse, bm25_ms) = await asyncio.gather(
            self._dense(loaded, query, depth),
            run_in_threadpool(self._bm25, loaded, query, depth),
        )
        t0 = time.perf_counter()
        hits = fuse_hits(
            dense, sparse, k=k, method=s.hybrid_fusion, weight=s.hybrid_weight, c=s.hybrid_rrf_c
        )
        seconds = time.perf_counter() - t0
        self.metrics.search.labels(kind="fusion").observe(seconds)
        return hits, timing.model_copy(update={"bm25_ms": bm25_ms, "fusion_ms": 1000 * seconds})

    async def document(self, loaded: LoadedIndex, doc_id: str) -> DocumentOut:
        """One document by id.

        Raises:
            HTTPException: 404 when the index holds no such document.
        """
        found = await run_in_threadpool(loaded.retriever.folder.store.by_id, doc_id)
        if found is None:
            raise HTTPException(status_code=404, detail=f"no document with id {doc_id!r}")
        _, title, text = found
        return DocumentOut(id=doc_id, title=title, text=text)

    async def upsert(self, loaded: LoadedIndex, docs: Sequence[DocumentIn]) -> UpdateResult:
        """Check and add documents, or replace those whose id exists, then reload.

        Encodes with `loaded`'s encoder in its bulk form (`search.encoder.bulk_encoder`),
        so the upsert's batches do not queue ahead of queries'.
        """
        triples = check_documents(docs, self.settings)
        encoder = bulk_encoder(loaded.retriever.encoder)
        index_dir = self.index_dir()
        async with self.admin_lock:
            return await self._write(
                lambda: upsert_documents(index_dir, triples, encoder, bm25=True)
            )

    async def delete(self, loaded: LoadedIndex, doc_id: str) -> UpdateResult:
        """Delete one document, then reload.

        Raises:
            HTTPException: 404 when the index holds no such document.
        """
        async with self.admin_lock:
            current = self.holder.current or loaded
            if await run_in_threadpool(current.retriever.folder.store.by_id, doc_id) is None:
                raise HTTPException(status_code=404, detail=f"no document with id {doc_id!r}")
            index_dir = self.index_dir()
            return await self._write(lambda: delete_documents(index_dir, [doc_id], bm25=True))

    async def _write(self, work: Callable[[], dict[str, Any]]) -> UpdateResult:
        """Run one index write (`indexer.update`, which rewrites BM25 when the index has
        it) on a worker thread and serve its result. Call with `admin_lock` held.

        Raises:
            HTTPException: 409 when the index cannot be updated, 400 for bad input, 503
                when the server's storage fails (a file or the doc store cannot be
                read or written); the index served stays as it was.
        """
        t0 = time.perf_counter()
        try:
            result = await run_in_threadpool(work)
        except DistilsearchError as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from exc
        except ValueError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc
        except (OSError, sqlite3.Error) as exc:
            # A fault of the server, not of the request: the client learns that, and
            # the log gets the paths and the traceback.
            logger.error("update of %s failed", self.settings.index_dir, exc_info=exc)
            raise HTTPException(status_code=503, detail=STORAGE_FAILED) from exc
        loaded = await self.reload()
        missing = result.get("missing", 0)
        return UpdateResult(
            added=int(result.get("added", 0)),
            replaced=int(result.get("replaced", 0)),
            deleted=int(result.get("deleted", 0)),
            missing=len(missing) if isinstance(missing, list) else int(missing),
            count=int(result.get("count", loaded.retriever.folder.count)),
            generation=loaded.generation,
            took_ms=1000 * (time.perf_counter() - t0),
        )

    async def reload_request(self) -> ReloadResult:
        """`reload` under `admin_lock`, reported.

        Raises:
            HTTPException: 409 when the folder cannot be loaded (the old index stays).
        """
        t0 = time.perf_counter()
        async with self.admin_lock:
            loaded = await self.reload()
        return ReloadResult(
            generation=loaded.generation,
            index_dir=str(loaded.index_dir),
            count=loaded.retriever.folder.count,
            bm25=loaded.bm25 is not None,
            took_ms=1000 * (time.perf_counter() - t0),
        )

    async def reload(self) -> LoadedIndex:
        """Load the index folder again, completely, then swap it in.

        Call with `admin_lock` held. Requests keep the index they leased; the old
        one closes when the last of them ends.

        Raises:
            HTTPException: 409 when the folder cannot be loaded (the old index stays).
        """
        self.index_dir()
        current = self.holder.current
        s = self.settings
        try:
            new = await run_in_threadpool(self.load_configured, current)
        except (DistilsearchError, OSError, RuntimeError) as exc:
            logger.error("reload of %s failed: %s", s.index_dir, exc)
            kept = f"; still serving generation {current.generation}" if current else ""
            raise HTTPException(
                status_code=409, detail=f"cannot load {s.index_dir}: {exc}{kept}"
            ) from exc
        self.holder.swap(new)
        self.observe_index(new)
        logger.info(
            "serving %s, generation %d (%d documents, bm25: %s)",
            new.index_dir,
            new.generation,
            new.retriever.folder.count,
            new.bm25 is not None,
        )
        return new

    def load_configured(self, after: LoadedIndex | None = None) -> LoadedIndex:
        """Load the settings' index folder (blocking). With `after`, the index served
        now: its encoder is reused and the new one is its next generation."""
        s = self.settings
        if s.index_dir is None:
            raise DistilsearchError(NO_INDEX)
        return load_index(
            s.index_dir,
            model=s.model,
            backend=s.backend,
            reuse=after.model if after is not None else None,
            generation=after.generation + 1 if after is not None else 1,
            threads=s.threads_per_worker(),
        )

    def load_standalone(self) -> LoadedModel:
        """Load the settings' model to serve alone, without an index (blocking)."""
        s = self.settings
        if s.model is None:
            raise DistilsearchError("no model to serve: set --model (DISTILSEARCH_MODEL)")
        return load_model(s.model, backend=s.backend, threads=s.threads_per_worker())

    async def embed(self, model: LoadedModel, body: EmbeddingsRequest) -> EmbeddingsResponse:
        """Check an embeddings request, then encode its texts (micro-batched with other
        requests' texts and queries) and count their tokens.

        Raises:
            HTTPException: 404 when the body names another model than `model`.
            RequestValidationError: 422 for bad input (`api.validation`).
            OverloadedError: too many texts and queries are waiting.
        """
        if body.model not in model.names:
            raise HTTPException(
                status_code=404,
                detail=f"model {body.model!r} is not served here; this server serves "
                f'{model.id!r} (GET /v1/models): send "model": {json.dumps(model.id)}',
            )
        texts = check_embedding_input(body.input, self.settings)
        check_dimensions(body.dimensions, model.encoder.dim, model.id)
        counts, encoded = await asyncio.gather(
            run_in_threadpool(model.tokens, texts),
            asyncio.gather(*(self.batcher.embed(model.encoder, t) for t in texts)),
        )
        vectors = encode_vectors(np.stack([v for v, _ in encoded]), body.encoding_format)
        tokens = sum(counts)
        self.metrics.embeddings.inc(len(texts))
        self.metrics.embedding_tokens.inc(tokens)
        return EmbeddingsResponse(
            data=[EmbeddingOut(index=i, embedding=v) for i, v in enumerate(vectors)],
            model=model.id,
            usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
        )

    def models(self, model: LoadedModel) -> ModelList:
        """The served model, as OpenAI's ``GET /v1/models`` lists models."""
        return ModelList(data=[ModelOut(id=model.id, created=model.created)])

    def observe_index(self, loaded: LoadedIndex) -> None:
        self.metrics.index_documents.set(loaded.retriever.folder.count)
        self.metrics.index_generation.set(loaded.generation)

    def info(self, loaded: LoadedIndex) -> Info:
        """The model, the index (type, size, manifest), BM25 and the service's limits."""
        r = loaded.retriever
        index = r.folder.index
        inner = getattr(faiss.downcast_index(index), "index", None)
        s = self.settings
        bm25 = loaded.bm25
        return Info(
            model={
                "name": r.encoder.name,
                "hash": r.encoder.model_hash,
                "dim": r.encoder.dim,
                "backend": r.encoder.backend,
            },
            index={
                "type": type(faiss.downcast_index(index)).__name__,
                "inner_type": (
                    type(faiss.downcast_index(inner)).__name__ if inner is not None else None
                ),
                "factory": r.folder.manifest.get("factory"),
                "size": r.folder.count,
                "vectors": int(index.ntotal),
                "dim": int(index.d),
                "folder": str(r.folder.path),
            },
            bm25={
                "available": bm25 is not None,
                "size": bm25.count if bm25 is not None else 0,
                "stemmer": bm25.meta.get("stemmer") if bm25 is not None else None,
                "reason": loaded.bm25_error,
                "hybrid": {
                    "fusion": s.hybrid_fusion,
                    "weight": s.hybrid_weight,
                    "rrf_c": s.hybrid_rrf_c,
                    "depth": s.hybrid_depth,
                },
            },
            default_mode=default_mode(bm25 is not None),
            limits={
                "max_k": s.max_k,
                "max_query_chars": s.max_query_chars,
                "max_batch_queries": s.max_batch_queries,
                "max_body_bytes": s.max_body_bytes,
                "batch_max_size": s.batch_max_size,
                "batch_max_wait_ms": s.batch_max_wait_ms,
            },
            manifest=r.folder.manifest,
            generation=loaded.generation,
            loaded_at=loaded.loaded_at,
        )
