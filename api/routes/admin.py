"""Admin endpoints, behind the API key: document upserts and deletes, index reloads.

Each write publishes a new version of the index folder (rewriting the BM25 index
when the folder has one) and swaps it in like ``/admin/reload``; see
`api.service.Service.upsert`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import AdminDep, IndexDep, ServiceDep
from api.schemas import ADMIN_ERRORS, ErrorOut, ReloadResult, UpdateResult, UpsertRequest

router = APIRouter(tags=["admin"], dependencies=[AdminDep])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No such document."}
}


@router.post("/documents", response_model=UpdateResult, responses=ADMIN_ERRORS)
async def upsert(body: UpsertRequest, loaded: IndexDep, service: ServiceDep) -> UpdateResult:
    """Add documents, or replace those whose id exists; they are searchable on return.

    When one request repeats an id, the last of its documents wins.
    """
    return await service.upsert(loaded, body.documents)


@router.delete(
    "/documents/{doc_id:path}",
    response_model=UpdateResult,
    responses={**ADMIN_ERRORS, **_NOT_FOUND},
)
async def delete(doc_id: str, loaded: IndexDep, service: ServiceDep) -> UpdateResult:
    """Remove one document; it is gone from search results on return."""
    return await service.delete(loaded, doc_id)


@router.post("/admin/reload", response_model=ReloadResult, responses=ADMIN_ERRORS)
async def reload(service: ServiceDep) -> ReloadResult:
    """Load the index folder again (e.g. after a rebuild) and swap it in.

    The new index is loaded completely first; requests in flight finish on the old
    one, which is closed after them. If loading fails, the old index stays (409).
    """
    return await service.reload_request()
