"""Admin endpoints, behind the API key: document upserts and deletes, index reloads.

Each write publishes a new version of the index folder (`indexer.update`, which also
rewrites the BM25 index when the folder has one) and swaps it in like ``/admin/reload``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, HTTPException
from starlette.concurrency import run_in_threadpool

from api.deps import AdminDep, EngineDep, ServiceDep
from api.schemas import ADMIN_ERRORS, ErrorOut, ReloadResult, UpdateResult, UpsertRequest
from api.service import Service, has_surrogate, invalid
from indexer.update import delete_documents, upsert_documents
from search.onnx_encoder import OnnxEncoder
from search.types import DistilsearchError

router = APIRouter(tags=["admin"], dependencies=[AdminDep])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No such document."}
}


async def _write(service: Service, work: Callable[[], dict[str, Any]]) -> UpdateResult:
    """Run one index write (it rebuilds BM25 when the index has it) and swap it in."""
    t0 = time.perf_counter()
    try:
        result = await run_in_threadpool(work)
    except DistilsearchError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    except ValueError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    engine = await service.reload()
    missing = result.get("missing", 0)
    return UpdateResult(
        added=int(result.get("added", 0)),
        replaced=int(result.get("replaced", 0)),
        deleted=int(result.get("deleted", 0)),
        missing=len(missing) if isinstance(missing, list) else int(missing),
        count=int(result.get("count", engine.retriever.folder.count)),
        generation=engine.generation,
        took_ms=1000 * (time.perf_counter() - t0),
    )


@router.post("/documents", response_model=UpdateResult, responses=ADMIN_ERRORS)
async def upsert(body: UpsertRequest, engine: EngineDep, service: ServiceDep) -> UpdateResult:
    """Add documents, or replace those whose id exists; they are searchable on return.

    When one request repeats an id, the last of its documents wins.
    """
    settings = service.settings
    docs = body.documents
    if len(docs) > settings.max_upsert_docs:
        raise invalid(
            ("body", "documents"),
            f"{len(docs)} documents; the limit is {settings.max_upsert_docs} per request",
            len(docs),
        )
    for i, doc in enumerate(docs):
        for name in ("id", "title", "text"):
            value = getattr(doc, name)
            if len(value) > settings.max_doc_chars:
                raise invalid(
                    ("body", "documents", i, name),
                    f"{name} is {len(value)} characters; the limit is {settings.max_doc_chars}",
                    value[:80],
                )
            if has_surrogate(value):
                raise invalid(
                    ("body", "documents", i, name),
                    f"{name} holds an unpaired UTF-16 surrogate; send valid Unicode",
                    value[:80],
                )
    triples = [(d.id, d.title, d.text) for d in docs]
    encoder = engine.retriever.encoder
    if isinstance(encoder, OnnxEncoder):  # its batches must not queue ahead of queries'
        encoder = encoder.sequential()
    async with service.admin_lock:
        return await _write(
            service, lambda: upsert_documents(settings.index_dir, triples, encoder, bm25=True)
        )


@router.delete(
    "/documents/{doc_id:path}",
    response_model=UpdateResult,
    responses={**ADMIN_ERRORS, **_NOT_FOUND},
)
async def delete(doc_id: str, engine: EngineDep, service: ServiceDep) -> UpdateResult:
    """Remove one document; it is gone from search results on return."""
    async with service.admin_lock:
        current = service.holder.current or engine
        if await run_in_threadpool(current.retriever.folder.store.by_id, doc_id) is None:
            raise HTTPException(status_code=404, detail=f"no document with id {doc_id!r}")
        return await _write(
            service, lambda: delete_documents(service.settings.index_dir, [doc_id], bm25=True)
        )


@router.post("/admin/reload", response_model=ReloadResult, responses=ADMIN_ERRORS)
async def reload(service: ServiceDep) -> ReloadResult:
    """Load the index folder again (e.g. after a rebuild) and swap it in.

    The new index is loaded completely first; requests in flight finish on the old
    one, which is closed after them. If loading fails, the old index stays (409).
    """
    t0 = time.perf_counter()
    async with service.admin_lock:
        engine = await service.reload()
    return ReloadResult(
        generation=engine.generation,
        index_dir=str(engine.index_dir),
        count=engine.retriever.folder.count,
        bm25=engine.bm25 is not None,
        took_ms=1000 * (time.perf_counter() - t0),
    )
