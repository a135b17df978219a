"""Reading documents."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from starlette.concurrency import run_in_threadpool

from api.deps import EngineDep
from api.schemas import ERRORS, DocumentOut, ErrorOut

router = APIRouter(tags=["documents"])


@router.get(
    "/documents/{doc_id:path}",
    response_model=DocumentOut,
    responses={**ERRORS, 404: {"model": ErrorOut, "description": "No such document."}},
)
async def get_document(doc_id: str, engine: EngineDep) -> DocumentOut:
    """One document by its id."""
    found = await run_in_threadpool(engine.retriever.folder.store.by_id, doc_id)
    if found is None:
        raise HTTPException(status_code=404, detail=f"no document with id {doc_id!r}")
    _, title, text = found
    return DocumentOut(id=doc_id, title=title, text=text)
