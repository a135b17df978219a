"""Request and response bodies of the HTTP API."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, description="The query text.")
    k: int = Field(10, ge=1, description="Number of hits (at most the service's max_k).")


class HitOut(BaseModel):
    id: str
    score: float = Field(description="Cosine similarity of query and document.")
    title: str
    snippet: str


class SearchResponse(BaseModel):
    query: str
    k: int
    hits: list[HitOut]
    took_ms: float


class Health(BaseModel):
    status: str
