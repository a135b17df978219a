"""Reading documents."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import IndexDep, ServiceDep
from api.schemas import ERRORS, DocumentOut, ErrorOut

router = APIRouter(tags=["documents"])


@router.get(
    "/documents/{doc_id:path}",
    response_model=DocumentOut,
    responses={**ERRORS, 404: {"model": ErrorOut, "description": "No such document."}},
)
async def get_document(doc_id: str, loaded: IndexDep, service: ServiceDep) -> DocumentOut:
    """One document by its id."""
    return await service.document(loaded, doc_id)
