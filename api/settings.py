"""Service settings, from the environment (prefix ``DISTILSEARCH_``) via pydantic-settings."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from search.encoder import BACKENDS
from search.hybrid import DEFAULT_DEPTH, DEFAULT_FUSION, DEFAULT_WEIGHT, RRF_C, Fusion
from search.onnx_encoder import cpu_count

MIN_API_KEY_CHARS = 16


class Settings(BaseSettings):
    """Settings of the HTTP service. No global instance: `create_app` takes one.

    Every field can be set as ``DISTILSEARCH_<NAME>`` (e.g. ``DISTILSEARCH_MAX_K=50``);
    list fields take JSON (``DISTILSEARCH_CORS_ORIGINS='["https://a.example"]'``).
    """

    model_config = SettingsConfigDict(env_prefix="DISTILSEARCH_", extra="ignore")

    index_dir: Path | None = Field(
        None,
        description="Index folder to serve; unset: `model` is served alone, for "
        "/v1/embeddings (the search routes answer 503).",
    )
    model: str | None = Field(
        None,
        description="Query encoder; default: the index's model. Without an index: the "
        "model served alone.",
    )
    backend: str = Field("auto", description="|".join(BACKENDS))
    host: str = Field("127.0.0.1", description="Address to bind; loopback unless told.")
    port: int = Field(8000, ge=0, le=65535)

    # Request limits.
    max_k: int = Field(100, ge=1, description="Largest k a request may ask for.")
    max_query_chars: int = Field(2000, ge=1, description="Longest query accepted.")
    max_batch_queries: int = Field(64, ge=1, description="Most queries in one /search/batch.")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest request body (413).")
    max_upsert_docs: int = Field(1000, ge=1, description="Most documents in one POST /documents.")
    max_doc_chars: int = Field(
        100_000, ge=1, description="Longest document id, title or text accepted."
    )
    max_embedding_inputs: int = Field(
        256, ge=1, description="Most texts in one POST /v1/embeddings."
    )
    max_embedding_chars: int = Field(
        8192,
        ge=1,
        description=(
            "Longest text POST /v1/embeddings accepts. The model reads at most its "
            "window of tokens of it; the rest is cut, as when indexing."
        ),
    )

    # Micro-batching of query encoding.
    batch_max_size: int = Field(
        32, ge=1, description="Most queries batched together (one FAISS search); 1: off."
    )
    batch_max_wait_ms: float = Field(
        2.0, ge=0, le=1000, description="How long a batch waits for more queries under load."
    )
    max_queue: int = Field(1024, ge=1, description="Queued queries before 503 (overload).")
    torch_threads: int | None = Field(
        None,
        ge=1,
        description="torch intra-op threads (process-wide); default for a torch encoder: "
        "cores / encode_workers.",
    )
    batch_encode_size: int = Field(
        1,
        ge=1,
        description=(
            "Queries per encoder sub-batch within a batch. 1: no padding is encoded, "
            "and an ONNX encoder runs the sub-batches side by side on all cores."
        ),
    )
    encode_workers: int | None = Field(
        None,
        ge=1,
        description=(
            "Threads that encode and search batches at the same time; default: one per "
            "core. Under load they keep every core busy."
        ),
    )
    encode_threads: int | None = Field(
        None,
        ge=1,
        description=(
            "onnxruntime threads of each encode, and torch's (process-wide) unless "
            "torch_threads is set; default: cores / encode_workers."
        ),
    )
    search_threads: int = Field(
        1,
        ge=1,
        description=(
            "FAISS OpenMP threads of dense search. 1: a search of a few queries gains "
            "little from more threads, and FAISS's would compete with the encoder's "
            "for the cores."
        ),
    )

    # Hybrid search: the defaults are search.hybrid's, which evaluation uses too.
    hybrid_fusion: Fusion = Field(DEFAULT_FUSION, description="How rankings fuse: rrf|convex.")
    hybrid_weight: float = Field(
        DEFAULT_WEIGHT, ge=0, le=1, description="Dense share of the fused score."
    )
    hybrid_rrf_c: int = Field(RRF_C, ge=0, description="RRF constant c in 1/(c + rank).")
    hybrid_depth: int = Field(DEFAULT_DEPTH, ge=1, description="Candidates each side retrieves.")

    # Safety.
    api_key: SecretStr | None = Field(
        None, description="Enables the admin endpoints (header X-API-Key); unset: they are off."
    )
    cors_origins: list[str] = Field(
        default_factory=list, description="Origins allowed by CORS; empty: CORS off."
    )

    def workers(self) -> int:
        """Encode workers: ``encode_workers``, or one per core."""
        return self.encode_workers or cpu_count()

    def threads_per_worker(self) -> int:
        """Encoder threads: ``encode_threads``, or the cores shared among the workers."""
        return self.encode_threads or max(1, cpu_count() // self.workers())

    @model_validator(mode="after")
    def _something_to_serve(self) -> Settings:
        if self.index_dir is None and self.model is None:
            raise ValueError(
                "nothing to serve: set index_dir (--index, DISTILSEARCH_INDEX_DIR) to serve "
                "an index, or model (--model, DISTILSEARCH_MODEL) to serve an encoder alone"
            )
        return self

    @field_validator("api_key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_API_KEY_CHARS:
            raise ValueError(
                f"the API key must be at least {MIN_API_KEY_CHARS} characters; generate one "
                'with `python -c "import secrets; print(secrets.token_urlsafe(32))"`'
            )
        return value
