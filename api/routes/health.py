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
    """The model and the index are loaded: searches will be answered."""
    loaded = service.holder.current
    if loaded is None and service.load_error is not None:
        raise HTTPException(
            status_code=503, detail=f"the index failed to load: {service.load_error}"
        )
    if loaded is None:
        raise HTTPException(status_code=503, detail="the index is not loaded yet; retry shortly")
    return Ready(status="ready", generation=loaded.generation, count=loaded.retriever.folder.count)
