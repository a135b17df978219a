"""The search service behind the routes: dense (micro-batched), BM25 and hybrid search,
input limits, and index reloads."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool

from api.batching import MicroBatcher
from api.engine import Engine, EngineHolder, load_engine
from api.metrics import Metrics
from api.schemas import HitOut, Mode, SearchResponse, Timing
from api.settings import Settings
from search.hybrid import fuse
from search.types import DistilsearchError, Hit

logger = logging.getLogger(__name__)


_SURROGATE = re.compile("[\ud800-\udfff]")


def has_surrogate(text: str) -> bool:
    """Whether `text` holds an unpaired UTF-16 surrogate (JSON allows ``"\\ud800"``)."""
    return _SURROGATE.search(text) is not None


def clean_text(text: str) -> str:
    """`text` with unpaired surrogates replaced by U+FFFD, safe to encode as UTF-8."""
    return _SURROGATE.sub("\ufffd", text)


def invalid(loc: Sequence[str | int], msg: str, value: Any) -> RequestValidationError:
    """A 422 shaped like pydantic's own errors, so every 422 reads the same."""
    return RequestValidationError(
        [{"type": "value_error", "loc": tuple(loc), "msg": msg, "input": value}]
    )


def check_query(query: str, settings: Settings, loc: Sequence[str | int]) -> str:
    """The stripped query, or a 422 saying why it cannot be searched."""
    stripped = query.strip()
    if not stripped:
        raise invalid(loc, "query is empty or only whitespace; send some words", query)
    if len(query) > settings.max_query_chars:
        raise invalid(
            loc,
            f"query is {len(query)} characters; the limit is {settings.max_query_chars}",
            query[:80],
        )
    if has_surrogate(query):
        raise invalid(loc, "query holds an unpaired UTF-16 surrogate; send valid Unicode", query)
    return stripped


DEFAULT_K = 10


def check_k(k: int | None, settings: Settings, loc: Sequence[str | int]) -> int:
    """`k`, or the default when None; a 422 when it is over ``max_k``."""
    if k is None:
        return min(DEFAULT_K, settings.max_k)
    if k > settings.max_k:
        raise invalid(loc, f"k={k} is over the limit {settings.max_k}", k)
    return k


@dataclass
class Service:
    """Everything a request needs, built once per app in its lifespan.

    Attributes:
        settings: Service settings.
        holder: The current engine, leased to requests.
        batcher: Encodes dense queries in micro-batches on its own thread.
        metrics: This app's Prometheus metrics.
        admin_lock: Serialises reloads and document updates.
    """

    settings: Settings
    holder: EngineHolder
    batcher: MicroBatcher
    metrics: Metrics
    admin_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def require_bm25(self, engine: Engine, mode: Mode) -> None:
        if engine.bm25 is None:
            raise HTTPException(
                status_code=400,
                detail=(
                    f"mode {mode!r} needs a BM25 index: {engine.bm25_error}. Search with "
                    "mode 'dense', or build it (indexer.update.write_bm25 on the index folder) "
                    "and POST /admin/reload"
                ),
            )

    async def search(self, engine: Engine, query: str, k: int, mode: Mode) -> SearchResponse:
        """Search one (already checked) query with `engine`."""
        t0 = time.perf_counter()
        if mode != "dense":
            self.require_bm25(engine, mode)
        if mode == "dense":
            hits, timing = await self._dense(engine, query, k)
        elif mode == "bm25":
            hits, bm25_ms = await run_in_threadpool(self._bm25, engine, query, k)
            timing = Timing(bm25_ms=bm25_ms)
        else:
            hits, timing = await self._hybrid(engine, query, k)
        self.metrics.queries.labels(mode=mode).inc()
        return SearchResponse(
            query=query,
            k=k,
            mode=mode,
            hits=[HitOut(id=h.id, score=h.score, title=h.title, snippet=h.snippet()) for h in hits],
            took_ms=1000 * (time.perf_counter() - t0),
            timing=timing,
        )

    async def _dense(self, engine: Engine, query: str, k: int) -> tuple[list[Hit], Timing]:
        hits, bt = await self.batcher.search(engine.retriever, query, k)
        return hits, Timing(
            queue_ms=bt.queue_ms,
            encode_ms=bt.encode_ms,
            search_ms=bt.search_ms,
            batch_size=bt.size,
        )

    def _bm25(self, engine: Engine, query: str, k: int) -> tuple[list[Hit], float]:
        """BM25 hits (runs on a worker thread)."""
        assert engine.bm25 is not None
        t0 = time.perf_counter()
        rows, scores = engine.bm25.search(query, k)
        docs = engine.retriever.folder.store.by_rows([int(r) for r in rows])
        hits = [
            Hit(docs[int(r)][0], float(s), docs[int(r)][1], docs[int(r)][2])
            for r, s in zip(rows, scores, strict=True)
            if int(r) in docs
        ]
        seconds = time.perf_counter() - t0
        self.metrics.search.labels(kind="bm25").observe(seconds)
        return hits, 1000 * seconds

    async def _hybrid(self, engine: Engine, query: str, k: int) -> tuple[list[Hit], Timing]:
        s = self.settings
        depth = max(k, s.hybrid_depth)
        (dense, timing), (sparse, bm25_ms) = await asyncio.gather(
            self._dense(engine, query, depth),
            run_in_threadpool(self._bm25, engine, query, depth),
        )
        t0 = time.perf_counter()
        by_id = {h.id: h for h in (*sparse, *dense)}
        fused = fuse(
            [(h.id, h.score) for h in dense],
            [(h.id, h.score) for h in sparse],
            method=s.hybrid_fusion,
            weight=s.hybrid_weight,
            c=s.hybrid_rrf_c,
        )[:k]
        hits = [Hit(i, score, by_id[i].title, by_id[i].text) for i, score in fused]
        seconds = time.perf_counter() - t0
        self.metrics.search.labels(kind="fusion").observe(seconds)
        return hits, timing.model_copy(update={"bm25_ms": bm25_ms, "fusion_ms": 1000 * seconds})

    async def reload(self) -> Engine:
        """Load the index folder again, completely, then swap it in.

        Call with `admin_lock` held. Requests keep the engine they leased; the old
        engine closes when the last of them ends.

        Raises:
            HTTPException: 409 when the folder cannot be loaded (the old index stays).
        """
        current = self.holder.current
        s = self.settings
        try:
            new = await run_in_threadpool(
                load_engine,
                s.index_dir,
                model=s.model,
                backend=s.backend,
                encoder=current.retriever.encoder if current is not None else None,
                generation=current.generation + 1 if current is not None else 1,
                threads=s.threads_per_worker(),
            )
        except (DistilsearchError, OSError, RuntimeError) as exc:
            logger.error("reload of %s failed: %s", s.index_dir, exc)
            kept = f"; still serving generation {current.generation}" if current else ""
            raise HTTPException(
                status_code=409, detail=f"cannot load {s.index_dir}: {exc}{kept}"
            ) from exc
        self.holder.swap(new)
        self.observe_engine(new)
        logger.info(
            "serving %s, generation %d (%d documents, bm25: %s)",
            new.index_dir,
            new.generation,
            new.retriever.folder.count,
            new.bm25 is not None,
        )
        return new

    def observe_engine(self, engine: Engine) -> None:
        self.metrics.index_documents.set(engine.retriever.folder.count)
        self.metrics.index_generation.set(engine.generation)
