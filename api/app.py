"""The FastAPI application: `create_app(settings)`; heavy objects load in the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.routes import health, search
from api.settings import Settings
from search.retriever import Retriever


def create_app(settings: Settings, *, retriever: Retriever | None = None) -> FastAPI:
    """Build the app.

    Args:
        settings: Service settings.
        retriever: An already loaded retriever (tests); otherwise one is opened from
            ``settings.index_dir`` when the app starts.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.retriever = retriever or Retriever.open(
            settings.index_dir,
            model=settings.model,
            backend=settings.backend,  # type: ignore[arg-type]
        )
        try:
            yield
        finally:
            if retriever is None:
                app.state.retriever.close()

    app = FastAPI(title="distilsearch", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.include_router(health.router)
    app.include_router(search.router)
    return app
