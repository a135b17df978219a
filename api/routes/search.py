"""Search endpoints: one query (POST or GET) and batches."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import IndexDep, ServiceDep
from api.schemas import (
    ERRORS,
    MODE_HELP,
    BatchSearchRequest,
    BatchSearchResponse,
    Mode,
    SearchRequest,
    SearchResponse,
)

router = APIRouter(tags=["search"])


@router.post("/search", response_model=SearchResponse, responses=ERRORS)
async def search(body: SearchRequest, loaded: IndexDep, service: ServiceDep) -> SearchResponse:
    """The `k` best documents for `query`: by embeddings (dense), keywords (bm25) or both."""
    return await service.search_request(loaded, body.query, body.k, body.mode)


@router.get("/search", response_model=SearchResponse, responses=ERRORS)
async def search_get(
    loaded: IndexDep,
    service: ServiceDep,
    q: Annotated[str, Query(min_length=1, description="The query text.")],
    k: Annotated[int | None, Query(ge=1, description="Number of hits; default 10.")] = None,
    mode: Annotated[Mode | None, Query(description=MODE_HELP)] = None,
) -> SearchResponse:
    """Like POST /search, with the query in the URL (`?q=...&k=...&mode=...`)."""
    return await service.search_request(loaded, q, k, mode, source="query")


@router.post("/search/batch", response_model=BatchSearchResponse, responses=ERRORS)
async def search_batch(
    body: BatchSearchRequest, loaded: IndexDep, service: ServiceDep
) -> BatchSearchResponse:
    """Several queries in one request; their dense encodings share micro-batches."""
    return await service.search_batch(loaded, body.queries, body.k, body.mode)
