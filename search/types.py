"""Data types shared by every floor: hits, BEIR dict aliases, errors."""

from __future__ import annotations

from dataclasses import dataclass

# BEIR's in-memory shapes, as `search.corpus.load_beir` returns them.
Corpus = dict[str, dict[str, str]]  # doc id -> {"title": ..., "text": ...}
Queries = dict[str, str]  # query id -> query text
Qrels = dict[str, dict[str, int]]  # query id -> doc id -> relevance
Results = dict[str, dict[str, float]]  # query id -> doc id -> score


class DistilsearchError(Exception):
    """An error a user can fix; the message says what is wrong and how to fix it."""


class AssetError(DistilsearchError):
    """A model asset is missing, corrupt or cannot be resolved offline."""


class DataError(DistilsearchError):
    """Input data is missing or malformed."""


class IndexMismatchError(DistilsearchError):
    """An index folder was built with a different model than the one asked to search it."""


@dataclass(frozen=True)
class Hit:
    """One search result.

    Attributes:
        id: Document id as given in the corpus.
        score: Inner product of the normalised query and document vectors (cosine).
        title: Document title ("" when the corpus has none).
        text: Full document text.
    """

    id: str
    score: float
    title: str
    text: str

    def snippet(self, max_chars: int = 240) -> str:
        """The start of the text, cut at a word boundary, at most `max_chars` long."""
        if len(self.text) <= max_chars:
            return self.text
        cut = self.text[:max_chars].rsplit(" ", 1)[0]
        return cut + "…"


def document_text(title: str, text: str) -> str:
    """The string a bi-encoder embeds for a document: ``title + " " + text``, stripped.

    This is the convention under which BEIR / MTEB scores of sentence-transformers
    models are published, so evaluation reproduces them.
    """
    return f"{title} {text}".strip()
