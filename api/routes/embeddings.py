"""OpenAI-compatible endpoints: ``POST /v1/embeddings`` and ``GET /v1/models``.

Any OpenAI client (``OpenAI(base_url="http://HOST:PORT/v1")``) can embed texts with
the served model; the texts are micro-batched with the searches' queries.
"""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import ModelDep, ServiceDep
from api.schemas import EMBEDDING_ERRORS, ERRORS, EmbeddingsRequest, EmbeddingsResponse, ModelList

router = APIRouter(prefix="/v1", tags=["openai"])


@router.post("/embeddings", response_model=EmbeddingsResponse, responses=EMBEDDING_ERRORS)
async def embeddings(
    body: EmbeddingsRequest, model: ModelDep, service: ServiceDep
) -> EmbeddingsResponse:
    """Vectors of texts, as OpenAI's embeddings API returns them: L2-normalised, as
    floats or base64 float32, with the tokens the model read as `usage`."""
    return await service.embed(model, body)


@router.get("/models", response_model=ModelList, responses={503: ERRORS[503]})
async def models(model: ModelDep, service: ServiceDep) -> ModelList:
    """The served model, as OpenAI's model list."""
    return service.models(model)
