"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

Mode = Literal["dense", "bm25", "hybrid"]
EncodingFormat = Literal["float", "base64"]
MODE_HELP = (
    "dense: embeddings; bm25: keywords; hybrid: both fused. Default: hybrid where the "
    "index has a BM25 index (GET /info says), else dense."
)


def _json_integer(value: Any) -> Any:
    """JSON Schema's integer: 2 and 2.0 are integers; true and "2" are not."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


MaybeInt = Annotated[int | None, BeforeValidator(_json_integer)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class SearchRequest(_Strict):
    query: str = Field(min_length=1, description="The query text (at most max_query_chars).")
    k: MaybeInt = Field(
        None,
        ge=1,
        description="Number of hits, at most the service's max_k; default 10 (or max_k).",
    )
    mode: Mode | None = Field(None, description=MODE_HELP)


class BatchSearchRequest(_Strict):
    queries: list[str] = Field(
        min_length=1, description="Query texts (at most max_batch_queries of them)."
    )
    k: MaybeInt = Field(
        None, ge=1, description="Hits per query, at most max_k; default 10 (or max_k)."
    )
    mode: Mode | None = Field(None, description=MODE_HELP)


class HitOut(BaseModel):
    id: str
    score: float = Field(
        description="dense: cosine similarity; bm25: BM25 score; hybrid: fused score."
    )
    title: str
    snippet: str


class Timing(BaseModel):
    """Where the time went, in milliseconds. Encoding and FAISS times are those of the
    whole micro-batch the query was part of."""

    queue_ms: float = 0.0
    encode_ms: float = 0.0
    search_ms: float = 0.0
    bm25_ms: float = 0.0
    fusion_ms: float = 0.0
    batch_size: int = 0


class SearchResponse(BaseModel):
    query: str
    k: int
    mode: Mode
    hits: list[HitOut]
    took_ms: float = Field(description="Server time for this query, in milliseconds.")
    timing: Timing


class BatchSearchResponse(BaseModel):
    results: list[SearchResponse]
    took_ms: float


class DocumentIn(_Strict):
    id: str = Field(min_length=1, max_length=512, description="The document's id.")
    title: str = Field("", description="Title; may be empty.")
    text: str = Field(min_length=1, description="Body text.")


class DocumentOut(BaseModel):
    id: str
    title: str
    text: str


class UpsertRequest(_Strict):
    documents: list[DocumentIn] = Field(
        min_length=1, description="Documents to add or replace (at most max_upsert_docs)."
    )


class UpdateResult(BaseModel):
    """What an admin write did, and the index generation now served."""

    added: int = 0
    replaced: int = 0
    deleted: int = 0
    missing: int = 0
    count: int = Field(description="Documents in the index now.")
    generation: int
    took_ms: float


class ReloadResult(BaseModel):
    generation: int
    index_dir: str
    count: int
    bm25: bool
    took_ms: float


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    generation: int = Field(description="Generation of the served index; 0 without one.")
    count: int = Field(description="Documents in the served index; 0 without one.")
    index: bool = Field(
        True, description="False when the server serves its encoder alone (no search)."
    )


def _text_only(value: Any) -> Any:
    """Refuse OpenAI's token-id input (arrays of integers) with a message saying what to
    send; strings and lists of strings pass to the type check."""
    if isinstance(value, list) and any(
        isinstance(v, list) or (isinstance(v, int) and not isinstance(v, bool)) for v in value
    ):
        raise ValueError(
            "input holds token ids; this server embeds text and tokenizes it with its own "
            "model: send a string or a list of strings"
        )
    return value


class EmbeddingsRequest(_Strict):
    """A request of OpenAI's embeddings API (``POST /v1/embeddings``)."""

    input: Annotated[str | list[str], BeforeValidator(_text_only)] = Field(
        description="A text, or a list of texts (at most max_embedding_inputs, each at most "
        "max_embedding_chars); not empty. Token-id arrays are refused."
    )
    model: str = Field(description="The served model's id (GET /v1/models lists it).")
    encoding_format: EncodingFormat = Field(
        "float",
        description="float: lists of numbers; base64: each vector's little-endian float32 "
        "bytes, base64-encoded.",
    )
    dimensions: MaybeInt = Field(
        None, ge=1, description="The model's dimension, if given: vectors are not shortened."
    )
    user: str | None = Field(None, description="Ignored (accepted as OpenAI's API does).")


class EmbeddingOut(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int = Field(description="Position of the text in the request's input.")
    embedding: list[float] | str = Field(
        description="The L2-normalised vector: numbers, or base64 of float32 bytes."
    )


class EmbeddingUsage(BaseModel):
    prompt_tokens: int = Field(description="Tokens the model read of the input texts.")
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingOut]
    model: str
    usage: EmbeddingUsage


class ModelOut(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(description="Unix time the model folder was last written.")
    owned_by: str = "distilsearch"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelOut]


class Info(BaseModel):
    model: dict[str, Any] = Field(description="Name, hash, dim and backend of the query encoder.")
    index: dict[str, Any] = Field(description="FAISS index type, factory, size and folder.")
    bm25: dict[str, Any] = Field(description="Whether hybrid/bm25 search is available, and why.")
    default_mode: Mode = Field(description="The mode of a search that names none.")
    limits: dict[str, Any]
    manifest: dict[str, Any]
    generation: int
    loaded_at: float


class ErrorOut(BaseModel):
    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "Bad request (see detail)."},
    413: {"model": ErrorOut, "description": "Body too large."},
    415: {"model": ErrorOut, "description": "Body is not JSON."},
    503: {"model": ErrorOut, "description": "Not loaded, or overloaded; retry."},
}
EMBEDDING_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    404: {"model": ErrorOut, "description": "The model named is not the one served."},
}
ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    401: {"model": ErrorOut, "description": "No API key sent."},
    403: {"model": ErrorOut, "description": "Wrong API key, or admin endpoints are off."},
    409: {"model": ErrorOut, "description": "The index could not be loaded or updated."},
    503: {
        "model": ErrorOut,
        "description": "Not loaded, or overloaded; or the server's storage failed to "
        "take the update (the index served is unchanged). See detail.",
    },
}
