"""Request checks that need the service's settings (limits), as 422 errors.

The pydantic schemas check shapes and types; what depends on `Settings` (lengths,
counts, ``k``) and what JSON allows but UTF-8 cannot carry (unpaired surrogates) is
checked here, and every failure is a `RequestValidationError` shaped like
pydantic's own, so every 422 reads the same. `api.openapi` publishes the same limits.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from fastapi.exceptions import RequestValidationError

from api.schemas import DocumentIn
from api.settings import Settings

Loc = Sequence[str | int]

DEFAULT_K = 10

_SURROGATE = re.compile("[\ud800-\udfff]")


def has_surrogate(text: str) -> bool:
    """Whether `text` holds an unpaired UTF-16 surrogate (JSON allows ``"\\ud800"``)."""
    return _SURROGATE.search(text) is not None


def clean_text(text: str) -> str:
    """`text` with unpaired surrogates replaced by U+FFFD, safe to encode as UTF-8."""
    return _SURROGATE.sub("\ufffd", text)


def invalid(loc: Loc, msg: str, value: Any) -> RequestValidationError:
    """A 422 shaped like pydantic's own errors."""
    return RequestValidationError(
        [{"type": "value_error", "loc": tuple(loc), "msg": msg, "input": value}]
    )


def check_query(query: str, settings: Settings, loc: Loc) -> str:
    """The stripped query, or a 422 saying why it cannot be searched."""
    stripped = query.strip()
    if not stripped:
        raise invalid(loc, "query is empty or only whitespace; send some words", query)
    if len(query) > settings.max_query_chars:
        raise invalid(
            loc,
            f"query is {len(query)} characters; the limit is {settings.max_query_chars}",
            query[:80],
        )
    if has_surrogate(query):
        raise invalid(loc, "query holds an unpaired UTF-16 surrogate; send valid Unicode", query)
    return stripped


def check_k(k: int | None, settings: Settings, loc: Loc) -> int:
    """`k`, or the default (10, at most ``max_k``) when None; a 422 when over ``max_k``."""
    if k is None:
        return min(DEFAULT_K, settings.max_k)
    if k > settings.max_k:
        raise invalid(loc, f"k={k} is over the limit {settings.max_k}", k)
    return k


def check_queries(queries: Sequence[str], settings: Settings) -> list[str]:
    """The stripped queries of a ``/search/batch`` body, or a 422 for the first problem."""
    if len(queries) > settings.max_batch_queries:
        raise invalid(
            ("body", "queries"),
            f"{len(queries)} queries; the limit is {settings.max_batch_queries} per batch",
            len(queries),
        )
    return [check_query(q, settings, ("body", "queries", i)) for i, q in enumerate(queries)]


def check_documents(docs: Sequence[DocumentIn], settings: Settings) -> list[tuple[str, str, str]]:
    """``(id, title, text)`` of an upsert body's documents, or a 422 for the first problem."""
    if len(docs) > settings.max_upsert_docs:
        raise invalid(
            ("body", "documents"),
            f"{len(docs)} documents; the limit is {settings.max_upsert_docs} per request",
            len(docs),
        )
    for i, doc in enumerate(docs):
        for name in ("id", "title", "text"):
            value = getattr(doc, name)
            if len(value) > settings.max_doc_chars:
                raise invalid(
                    ("body", "documents", i, name),
                    f"{name} is {len(value)} characters; the limit is {settings.max_doc_chars}",
                    value[:80],
                )
            if has_surrogate(value):
                raise invalid(
                    ("body", "documents", i, name),
                    f"{name} holds an unpaired UTF-16 surrogate; send valid Unicode",
                    value[:80],
                )
    return [(d.id, d.title, d.text) for d in docs]
