"""What is being served, and the Prometheus metrics."""

from __future__ import annotations

import faiss
from fastapi import APIRouter, Response

from api.deps import EngineDep, ServiceDep
from api.schemas import ERRORS, Info

router = APIRouter(tags=["info"])


@router.get("/info", response_model=Info, responses={503: ERRORS[503]})
async def info(engine: EngineDep, service: ServiceDep) -> Info:
    """The model, the index (type, size, manifest) and the service's limits."""
    r = engine.retriever
    index = r.folder.index
    inner = getattr(faiss.downcast_index(index), "index", None)
    s = service.settings
    bm25 = engine.bm25
    return Info(
        model={
            "name": r.encoder.name,
            "hash": r.encoder.model_hash,
            "dim": r.encoder.dim,
            "backend": r.encoder.backend,
        },
        index={
            "type": type(faiss.downcast_index(index)).__name__,
            "inner_type": type(faiss.downcast_index(inner)).__name__ if inner is not None else None,
            "factory": r.folder.manifest.get("factory"),
            "size": r.folder.count,
            "vectors": int(index.ntotal),
            "dim": int(index.d),
            "folder": str(r.folder.path),
        },
        bm25={
            "available": bm25 is not None,
            "size": bm25.count if bm25 is not None else 0,
            "stemmer": bm25.meta.get("stemmer") if bm25 is not None else None,
            "reason": engine.bm25_error,
            "hybrid": {
                "fusion": s.hybrid_fusion,
                "weight": s.hybrid_weight,
                "rrf_c": s.hybrid_rrf_c,
                "depth": s.hybrid_depth,
            },
        },
        limits={
            "max_k": s.max_k,
            "max_query_chars": s.max_query_chars,
            "max_batch_queries": s.max_batch_queries,
            "max_body_bytes": s.max_body_bytes,
            "batch_max_size": s.batch_max_size,
            "batch_max_wait_ms": s.batch_max_wait_ms,
        },
        manifest=r.folder.manifest,
        generation=engine.generation,
        loaded_at=engine.loaded_at,
    )


@router.get("/metrics", response_class=Response)
async def metrics(service: ServiceDep) -> Response:
    """Prometheus metrics (text exposition format)."""
    engine = service.holder.current
    if engine is not None:
        service.observe_engine(engine)
    body, content_type = service.metrics.render()
    return Response(content=body, media_type=content_type)
