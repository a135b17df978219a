"""What is being served, and the Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import IndexDep, ServiceDep
from api.schemas import ERRORS, Info

router = APIRouter(tags=["info"])


@router.get("/info", response_model=Info, responses={503: ERRORS[503]})
async def info(loaded: IndexDep, service: ServiceDep) -> Info:
    """The model, the index (type, size, manifest) and the service's limits."""
    return service.info(loaded)


@router.get("/metrics", response_class=Response)
async def metrics(service: ServiceDep) -> Response:
    """Prometheus metrics (text exposition format)."""
    loaded = service.holder.current
    if loaded is not None:
        service.observe_index(loaded)
    body, content_type = service.metrics.render()
    return Response(content=body, media_type=content_type)
