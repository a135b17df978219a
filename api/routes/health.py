"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from api.deps import ServiceDep
from api.schemas import ERRORS, Health, Ready

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
async def health() -> Health:
    """The process is up (it may still be loading)."""
    return Health(status="ok")


@router.get("/ready", response_model=Ready, responses={503: ERRORS[503]})
async def ready(service: ServiceDep) -> Ready:
    """The model and the index are loaded: searches will be answered. A server of an
    encoder alone is ready once the model is loaded (``index`` is false)."""
    if service.standalone is not None:
        return Ready(status="ready", generation=0, count=0, index=False)
    loaded = service.holder.current
    if loaded is None:
        raise HTTPException(status_code=503, detail=service.not_loaded())
    return Ready(status="ready", generation=loaded.generation, count=loaded.retriever.folder.count)
