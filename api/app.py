"""The FastAPI application: `create_app(settings)`; heavy objects load in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from api.loaded_index import IndexHolder, loaded_index_for
from api.metrics import Metrics
from api.microbatch import MicroBatcher, OverloadedError
from api.middleware import BodyGuardMiddleware, MetricsMiddleware, OpenAIErrorMiddleware
from api.openapi import openapi_with_limits
from api.routes import admin, documents, embeddings, health, info, search, ui
from api.service import Service
from api.settings import Settings
from api.validation import clean_text
from search.retriever import Retriever

logger = logging.getLogger(__name__)


def _set_torch_threads(settings: Settings, backend: str) -> None:
    """torch's intra-op threads: ``torch_threads``, else, for a torch encoder, the cores
    shared among the encode workers (two workers on two threads each would ask four
    threads of two cores)."""
    n = settings.torch_threads
    if n is None and backend == "torch":
        n = settings.threads_per_worker()
    if n is not None:
        import torch

        torch.set_num_threads(n)


async def _overloaded(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})


def _clean(value: Any) -> Any:
    """`value` made safe to render as JSON: unpaired surrogates replaced, and numbers
    JSON cannot hold (NaN, infinities) written as strings."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return json.dumps(value)  # "NaN", "Infinity", "-Infinity"
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    # FastAPI's own 422, except that echoed input is made safe to encode: JSON may
    # carry unpaired surrogates ("\ud800"), which UTF-8 cannot, and a float that is
    # not finite would fail the renderer (the body guard refuses those in bodies; a
    # check may still echo one).
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    return JSONResponse({"detail": _clean(jsonable_encoder(errors))}, status_code=422)


async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    # The last resort: tests show no request reaches it. Logged with its traceback;
    # the client learns nothing about the internals.
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        {"detail": "internal server error; the server log has the details"}, status_code=500
    )


def create_app(
    settings: Settings,
    *,
    retriever: Retriever | None = None,
    load_in_background: bool = False,
    on_load_error: Callable[[BaseException], None] | None = None,
) -> FastAPI:
    """Build the app.

    Args:
        settings: Service settings.
        retriever: An already loaded retriever (tests); otherwise one is opened from
            ``settings.index_dir`` when the app starts, or, when the settings name no
            index, ``settings.model`` is loaded and served alone (``/v1/embeddings``;
            the search routes answer 503). A retriever passed in is not closed by the
            app; ``/admin/reload`` still loads ``settings.index_dir``.
        load_in_background: Answer requests at once and load the index on a worker
            thread (what `distilsearch serve` does): ``/health`` answers, ``/ready``
            and the routes that need the index answer 503 until it is loaded. False:
            the app starts only once the index is loaded, and a failed load fails
            the start.
        on_load_error: Called with the exception when a background load fails (after
            it is logged; ``/ready`` then says why).
    """
    metrics = Metrics()
    app = FastAPI(
        title="distilsearch",
        version="0.1.0",
        description="Semantic search with a distilled encoder: dense, BM25 and hybrid.",
        lifespan=_lifespan(settings, metrics, retriever, load_in_background, on_load_error),
    )
    app.state.settings = settings
    app.state.service = None
    _add_routes(app, settings)
    _add_error_handlers(app)
    _add_middleware(app, settings, metrics)
    return app


def _lifespan(
    settings: Settings,
    metrics: Metrics,
    retriever: Retriever | None,
    load_in_background: bool,
    on_load_error: Callable[[BaseException], None] | None,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's lifespan: start the micro-batcher, load the index (now, or on a task
    when `load_in_background`), publish the service on ``app.state``; on shutdown stop
    the batcher and drop the index."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = _new_service(settings, metrics)

        async def load_or_report() -> None:
            try:
                await _load(service, retriever)
            except Exception as exc:
                what = f"the index {settings.index_dir}" if settings.index_dir else "the model"
                logger.error("cannot load %s: %s", what, exc)
                service.load_error = str(exc)
                if on_load_error is not None:
                    on_load_error(exc)

        service.batcher.start()
        loading: asyncio.Task[None] | None = None
        try:
            if load_in_background:
                loading = asyncio.create_task(load_or_report())
            else:
                await _load(service, retriever)
            app.state.service = service
            yield
        finally:
            if loading is not None:
                loading.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loading
            service.batcher.stop()
            service.holder.swap(None)
            service.standalone = None
            app.state.service = None

    return lifespan


def _new_service(settings: Settings, metrics: Metrics) -> Service:
    """A service with no index yet and a micro-batcher not yet started."""
    batcher = MicroBatcher(
        max_batch=settings.batch_max_size,
        max_wait_ms=settings.batch_max_wait_ms,
        max_queue=settings.max_queue,
        on_batch=metrics.observe_batch,
        search_threads=settings.search_threads,
        workers=settings.workers(),
        encode_batch_size=settings.batch_encode_size,
    )
    return Service(settings, IndexHolder(), batcher, metrics)


async def _load(service: Service, retriever: Retriever | None) -> None:
    """Load the index into `service`: `retriever` when given, else the settings' index
    folder (on a worker thread); without either, the settings' model, served alone."""
    if retriever is None and service.settings.index_dir is None:
        model = await run_in_threadpool(service.load_standalone)
        _set_torch_threads(service.settings, model.encoder.backend)
        service.standalone = model
        return
    if retriever is not None:
        loaded = loaded_index_for(retriever)
    else:
        loaded = await run_in_threadpool(service.load_configured)
    _set_torch_threads(service.settings, loaded.retriever.encoder.backend)
    service.holder.swap(loaded)
    service.observe_index(loaded)


def _add_routes(app: FastAPI, settings: Settings) -> None:
    """The routers, the search page's static files and the OpenAPI schema with limits."""
    for module in (health, search, embeddings, documents, admin, info, ui):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=ui.STATIC_DIR), name="static")
    app.openapi = openapi_with_limits(app, settings)  # type: ignore[method-assign]


def _add_error_handlers(app: FastAPI) -> None:
    """422 with encodable input, 503 on overload, and a logged, opaque 500."""
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(OverloadedError, _overloaded)
    app.add_exception_handler(Exception, _server_error)


def _add_middleware(app: FastAPI, settings: Settings, metrics: Metrics) -> None:
    """Body size guard, OpenAI's error object on /v1/ answers, request metrics and, when
    origins are set, CORS."""
    app.add_middleware(BodyGuardMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(OpenAIErrorMiddleware, prefix="/v1/")
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Content-Type", "X-API-Key"],
        )
