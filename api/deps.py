"""FastAPI dependencies as `Annotated` aliases.

They are ``async def`` so FastAPI runs them on the event loop rather than sending
each one to the thread pool.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader

from api.loaded_index import LoadedIndex, LoadedModel, NotLoadedError
from api.service import NO_INDEX, Service
from api.settings import Settings

API_KEY_HEADER = "X-API-Key"
_api_key = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)


async def get_service(request: Request) -> Service:
    service: Service | None = getattr(request.app.state, "service", None)
    if service is None:
        raise HTTPException(status_code=503, detail="the service is starting; retry shortly")
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_index(service: ServiceDep) -> AsyncIterator[LoadedIndex]:
    """A lease on the current index for the whole request (a reload cannot close it)."""
    try:
        loaded = service.holder.acquire()
    except NotLoadedError as exc:
        detail = NO_INDEX if service.settings.index_dir is None else f"{exc}; retry shortly"
        raise HTTPException(status_code=503, detail=detail) from exc
    try:
        yield loaded
    finally:
        service.holder.release(loaded)


IndexDep = Annotated[LoadedIndex, Depends(get_index)]


async def get_model(service: ServiceDep) -> AsyncIterator[LoadedModel]:
    """The served model for the whole request: the one served alone, or the current
    index's (on a lease, so a reload cannot close it)."""
    if service.standalone is not None:
        yield service.standalone
        return
    try:
        loaded = service.holder.acquire()
    except NotLoadedError as exc:
        raise HTTPException(status_code=503, detail=service.not_loaded()) from exc
    try:
        yield loaded.model
    finally:
        service.holder.release(loaded)


ModelDep = Annotated[LoadedModel, Depends(get_model)]


async def require_admin(
    settings: Annotated[Settings, Depends(get_settings)],
    key: Annotated[str | None, Security(_api_key)],
) -> None:
    """Let a request through only with the configured API key (constant-time compare)."""
    if settings.api_key is None:
        raise HTTPException(
            status_code=403,
            detail="admin endpoints are off; set DISTILSEARCH_API_KEY on the server to enable them",
        )
    if not key:
        raise HTTPException(
            status_code=401,
            detail=f"send the API key in the {API_KEY_HEADER} header",
            headers={"WWW-Authenticate": API_KEY_HEADER},
        )
    expected = settings.api_key.get_secret_value().encode()
    if not secrets.compare_digest(key.encode(), expected):
        raise HTTPException(status_code=403, detail="wrong API key")


AdminDep = Depends(require_admin)
