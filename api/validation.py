"""Request checks that need the service's settings (limits), as 422 errors.

The pydantic schemas check shapes and types; what depends on `Settings` (lengths,
counts, ``k``), queries with nothing to search (only whitespace or invisible
characters) and what JSON allows but UTF-8 cannot carry (unpaired surrogates) are
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

# Characters that show nothing: whitespace as str.strip() removes it, the C0 and C1
# controls, and Unicode's Default_Ignorable_Code_Point characters (zero-width space,
# non-joiner and joiner, word joiner, bidi marks, soft hyphen, BOM, variation
# selectors, Hangul fillers, tags). A query made only of them has no words to search.
BLANK_RANGES: tuple[tuple[int, int], ...] = (
    (0x0000, 0x0020),  # C0 controls (\t to \r, \x1c to \x1f) and space
    (0x007F, 0x00A0),  # DEL, C1 controls (\x85), no-break space
    (0x00AD, 0x00AD),  # soft hyphen
    (0x034F, 0x034F),  # combining grapheme joiner
    (0x061C, 0x061C),  # Arabic letter mark
    (0x115F, 0x1160),  # Hangul fillers
    (0x1680, 0x1680),  # Ogham space mark
    (0x17B4, 0x17B5),  # Khmer inherent vowels
    (0x180B, 0x180F),  # Mongolian variation selectors and vowel separator
    (0x2000, 0x200F),  # spaces, zero-width space, (non-)joiner, LRM, RLM
    (0x2028, 0x202F),  # line and paragraph separators, bidi embeddings, narrow space
    (0x205F, 0x206F),  # medium space, word joiner, invisible operators, bidi isolates
    (0x3000, 0x3000),  # ideographic space
    (0x3164, 0x3164),  # Hangul filler
    (0xFE00, 0xFE0F),  # variation selectors
    (0xFEFF, 0xFEFF),  # zero-width no-break space (BOM)
    (0xFFA0, 0xFFA0),  # halfwidth Hangul filler
    (0xFFF0, 0xFFF8),  # reserved default-ignorable
    (0x1BCA0, 0x1BCA3),  # shorthand format controls
    (0x1D173, 0x1D17A),  # musical symbol format controls
    (0xE0000, 0xE0FFF),  # tags, variation selectors supplement
)


def _class_char(code: int) -> str:
    # The class is spelled out because regex engines disagree on \s (ECMA's leaves out
    # U+001C..U+001F and U+0085, which strip() removes). BMP characters are \uXXXX
    # escapes and others themselves, so that Python's re and ECMA-262 regular
    # expressions with the u flag read the class the same way.
    return f"\\u{code:04x}" if code <= 0xFFFF else chr(code)


_BLANK_CLASS = "".join(
    _class_char(a) if a == b else f"{_class_char(a)}-{_class_char(b)}" for a, b in BLANK_RANGES
)
NOT_BLANK = f"[^{_BLANK_CLASS}]"
"""A regex that finds a character that shows (published as the queries' pattern)."""
_SHOWN = re.compile(NOT_BLANK)


def has_surrogate(text: str) -> bool:
    """Whether `text` holds an unpaired UTF-16 surrogate (JSON allows ``"\\ud800"``)."""
    return _SURROGATE.search(text) is not None


def is_blank(text: str) -> bool:
    """Whether `text` shows nothing: only whitespace, controls or invisible characters
    (`BLANK_RANGES`), or nothing at all."""
    return _SHOWN.search(text) is None


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
    if is_blank(query):
        raise invalid(
            loc,
            "query is empty or only whitespace or invisible characters (such as zero-width "
            "spaces); send some words",
            query,
        )
    if len(query) > settings.max_query_chars:
        raise invalid(
            loc,
            f"query is {len(query)} characters; the limit is {settings.max_query_chars}",
            query[:80],
        )
    if has_surrogate(query):
        raise invalid(loc, "query holds an unpaired UTF-16 surrogate; send valid Unicode", query)
    return query.strip()


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


def check_embedding_input(value: str | Sequence[str], settings: Settings) -> list[str]:
    """The texts of a ``/v1/embeddings`` body's ``input`` (one string or a list of them),
    as sent, or a 422 for the first problem: none, too many, one empty (only
    whitespace or invisible characters), too long, or holding an unpaired surrogate."""
    texts = [value] if isinstance(value, str) else list(value)
    if not texts:
        raise invalid(("body", "input"), "input is an empty list; send at least one text", [])
    if len(texts) > settings.max_embedding_inputs:
        raise invalid(
            ("body", "input"),
            f"{len(texts)} texts; the limit is {settings.max_embedding_inputs} per request "
            "(send them in several requests)",
            len(texts),
        )
    locs: list[Loc] = (
        [("body", "input")]
        if isinstance(value, str)
        else [("body", "input", i) for i in range(len(texts))]
    )
    for text, loc in zip(texts, locs, strict=True):
        if is_blank(text):
            raise invalid(
                loc,
                "text is empty or only whitespace or invisible characters (such as "
                "zero-width spaces); send some words",
                text,
            )
        if len(text) > settings.max_embedding_chars:
            raise invalid(
                loc,
                f"text is {len(text)} characters; the limit is {settings.max_embedding_chars}",
                text[:80],
            )
        if has_surrogate(text):
            raise invalid(loc, "text holds an unpaired UTF-16 surrogate; send valid Unicode", text)
    return texts


def check_dimensions(dimensions: int | None, dim: int, model: str) -> None:
    """A 422 unless `dimensions` is None or `model`'s own dimension `dim`."""
    if dimensions is not None and dimensions != dim:
        raise invalid(
            ("body", "dimensions"),
            f"dimensions={dimensions}, but {model} gives {dim}-d vectors and does not "
            f"shorten them; omit dimensions or send {dim}",
            dimensions,
        )
