"""Search endpoints."""

from __future__ import annotations

import time

from fastapi import APIRouter, HTTPException
from starlette.concurrency import run_in_threadpool

from api.deps import RetrieverDep, SettingsDep
from api.schemas import HitOut, SearchRequest, SearchResponse

router = APIRouter(tags=["search"])


@router.post("/search", response_model=SearchResponse)
async def search(
    body: SearchRequest, retriever: RetrieverDep, settings: SettingsDep
) -> SearchResponse:
    """Dense search: the `k` documents most similar to `query`."""
    query = body.query.strip()
    if not query:
        raise HTTPException(status_code=422, detail="query is empty or only whitespace")
    if len(query) > settings.max_query_chars:
        raise HTTPException(
            status_code=422,
            detail=f"query is {len(query)} characters; the limit is {settings.max_query_chars}",
        )
    if body.k > settings.max_k:
        raise HTTPException(
            status_code=422, detail=f"k={body.k} is over the limit {settings.max_k}"
        )
    t0 = time.perf_counter()
    hits = await run_in_threadpool(retriever.search, query, body.k)
    return SearchResponse(
        query=query,
        k=body.k,
        hits=[HitOut(id=h.id, score=h.score, title=h.title, snippet=h.snippet()) for h in hits],
        took_ms=1000 * (time.perf_counter() - t0),
    )
