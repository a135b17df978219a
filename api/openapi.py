"""The OpenAPI schema with this server's limits written in.

Limits come from `Settings`, so the request models cannot carry them; `api.validation`
checks them (422), and this fills them into the published schema, so clients — and
schema-driven fuzzers — see exactly what is accepted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api.settings import Settings
from api.validation import NOT_BLANK


def _text(schema: dict[str, Any], max_chars: int) -> None:
    # At least one character that shows, as `api.validation.check_query` demands.
    schema.update(minLength=1, maxLength=max_chars, pattern=NOT_BLANK)


def _set_k(schema: dict[str, Any], max_k: int) -> None:
    """Cap the integer branch of `k` (``anyOf`` integer | null, or a plain integer)."""
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") == "integer":
            branch["maximum"] = max_k


def _set_inputs(schema: dict[str, Any], s: Settings) -> None:
    """Limit ``/v1/embeddings``'s ``input``: a text, or a list of texts (``anyOf``)."""
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") == "string":
            _text(branch, s.max_embedding_chars)
        elif branch.get("type") == "array":
            branch.update(minItems=1, maxItems=s.max_embedding_inputs)
            _text(branch["items"], s.max_embedding_chars)


def apply_limits(schema: dict[str, Any], s: Settings) -> dict[str, Any]:
    """Write `s`'s request limits into an OpenAPI document (in place; returned)."""
    models = schema["components"]["schemas"]
    search = models["SearchRequest"]["properties"]
    _text(search["query"], s.max_query_chars)
    _set_k(search["k"], s.max_k)
    batch = models["BatchSearchRequest"]["properties"]
    batch["queries"]["maxItems"] = s.max_batch_queries
    _text(batch["queries"]["items"], s.max_query_chars)
    _set_k(batch["k"], s.max_k)
    _set_inputs(models["EmbeddingsRequest"]["properties"]["input"], s)
    models["UpsertRequest"]["properties"]["documents"]["maxItems"] = s.max_upsert_docs
    doc = models["DocumentIn"]["properties"]
    doc["id"]["maxLength"] = min(doc["id"].get("maxLength", s.max_doc_chars), s.max_doc_chars)
    doc["title"]["maxLength"] = s.max_doc_chars
    doc["text"]["maxLength"] = s.max_doc_chars
    for param in schema["paths"]["/search"]["get"]["parameters"]:
        if param["name"] == "q":
            _text(param["schema"], s.max_query_chars)
        elif param["name"] == "k":
            _set_k(param["schema"], s.max_k)
    return schema


def openapi_with_limits(app: FastAPI, settings: Settings) -> Callable[[], dict[str, Any]]:
    """A replacement for ``app.openapi`` that builds the schema once, limits included."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = apply_limits(schema, settings)
        return app.openapi_schema

    return openapi
