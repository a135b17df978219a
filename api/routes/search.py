"""Search endpoints: one query (POST or GET) and batches."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import EngineDep, ServiceDep
from api.schemas import (
    ERRORS,
    BatchSearchRequest,
    BatchSearchResponse,
    Mode,
    SearchRequest,
    SearchResponse,
)
from api.service import check_k, check_query, invalid

router = APIRouter(tags=["search"])


@router.post("/search", response_model=SearchResponse, responses=ERRORS)
async def search(body: SearchRequest, engine: EngineDep, service: ServiceDep) -> SearchResponse:
    """The `k` best documents for `query`: by embeddings (dense), keywords (bm25) or both."""
    query = check_query(body.query, service.settings, ("body", "query"))
    k = check_k(body.k, service.settings, ("body", "k"))
    return await service.search(engine, query, k, body.mode)


@router.get("/search", response_model=SearchResponse, responses=ERRORS)
async def search_get(
    engine: EngineDep,
    service: ServiceDep,
    q: Annotated[str, Query(min_length=1, description="The query text.")],
    k: Annotated[int | None, Query(ge=1, description="Number of hits; default 10.")] = None,
    mode: Annotated[Mode, Query(description="dense, bm25 or hybrid.")] = "dense",
) -> SearchResponse:
    """Like POST /search, with the query in the URL (`?q=...&k=...&mode=...`)."""
    query = check_query(q, service.settings, ("query", "q"))
    hits = check_k(k, service.settings, ("query", "k"))
    return await service.search(engine, query, hits, mode)


@router.post("/search/batch", response_model=BatchSearchResponse, responses=ERRORS)
async def search_batch(
    body: BatchSearchRequest, engine: EngineDep, service: ServiceDep
) -> BatchSearchResponse:
    """Several queries in one request; their dense encodings share micro-batches."""
    settings = service.settings
    if len(body.queries) > settings.max_batch_queries:
        raise invalid(
            ("body", "queries"),
            f"{len(body.queries)} queries; the limit is {settings.max_batch_queries} per batch",
            len(body.queries),
        )
    queries = [check_query(q, settings, ("body", "queries", i)) for i, q in enumerate(body.queries)]
    k = check_k(body.k, settings, ("body", "k"))
    t0 = time.perf_counter()
    results = await asyncio.gather(*(service.search(engine, q, k, body.mode) for q in queries))
    return BatchSearchResponse(results=list(results), took_ms=1000 * (time.perf_counter() - t0))
