"""BM25 search: the one tokeniser, index builder and searcher, and the index folder's
``bm25/`` (reading side).

Evaluation builds a `BM25Index` in memory (`BM25Index.build`); the indexer builds
the same one and saves it (`indexer.bm25.write_bm25_files`); the service loads it
(`load_bm25`). All three tokenise with `tokenize` and rank with `BM25Index.search`,
so they cannot disagree. An index folder may hold a ``bm25/`` folder beside
``index.faiss``::

    bm25/           bm25s's saved index (vocab, CSC score matrix, params)
    bm25/rows.npy   int64, shape (n,): BM25 document i is doc-store ``row`` rows[i]
    bm25/meta.json  tokenizer (stopwords, stemmer), count, sha256 of the docs.sqlite
                    it was built from (a stale BM25 index is refused on load)

To add one to a published folder, use `indexer.update.write_bm25`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from search.assets import sha256_file
from search.docstore import DocStore
from search.index_folder import DOCSTORE_FILE
from search.types import DataError, Hit

logger = logging.getLogger(__name__)

BM25_DIR = "bm25"
ROWS_FILE = "rows.npy"
META_FILE = "meta.json"
BM25_FORMAT_VERSION = 1
STOPWORDS = "en"
STEMMER_LANGUAGE = "english"


def make_stemmer(language: str | None = STEMMER_LANGUAGE) -> Any:
    """A Snowball stemmer from PyStemmer, or None when `language` is None or it is absent."""
    if language is None:
        return None
    try:
        import Stemmer  # type: ignore[import-not-found]
    except ImportError:
        return None
    return Stemmer.Stemmer(language)


def _bm25s() -> Any:
    """The bm25s module. Importing it sets its logger to DEBUG, which would print its
    debug lines through the application's handlers whatever level the application
    chose; the level the ``bm25s`` logger had before (NOTSET unless someone set it)
    is put back."""
    log = logging.getLogger("bm25s")
    level = log.level
    import bm25s

    log.setLevel(level)
    return bm25s


def tokenize(texts: Sequence[str], stemmer: Any) -> list[list[str]]:
    """Lower-cased word tokens without English stopwords, stemmed when `stemmer` is given.

    bm25s's tokenizer with `STOPWORDS`; every BM25 index and query goes through here.
    """
    tokens = _bm25s().tokenize(
        list(texts), stopwords=STOPWORDS, stemmer=stemmer, return_ids=False, show_progress=False
    )
    return [[t for t in doc if t] for doc in tokens]  # type: ignore[union-attr]


@dataclass
class BM25Index:
    """A loaded BM25 index whose documents are doc-store rows.

    Attributes:
        model: The bm25s model.
        rows: int64 array, shape (count,): doc-store row of each BM25 document.
        meta: Parsed ``meta.json``.
        stemmer: The stemmer queries are tokenised with (None: no stemming).
    """

    model: Any
    rows: np.ndarray
    meta: dict[str, Any]
    stemmer: Any

    @classmethod
    def build(cls, texts: Sequence[str], rows: np.ndarray | None = None) -> BM25Index:
        """Index `texts` (title and text of each document, see `document_text`).

        Args:
            texts: One string per document.
            rows: int64, shape (len(texts),): the key `search` returns for each text;
                default ``0 .. len(texts) - 1``.

        Raises:
            ValueError: `rows` does not have one entry per text.
        """
        keys = np.arange(len(texts), dtype=np.int64) if rows is None else np.asarray(rows)
        if keys.shape != (len(texts),):
            raise ValueError(f"rows has shape {keys.shape}; expected ({len(texts)},), one per text")
        stemmer = make_stemmer()
        model = _bm25s().BM25()
        model.index(tokenize(texts, stemmer), show_progress=False)
        meta = {
            "format_version": BM25_FORMAT_VERSION,
            "count": len(texts),
            "stopwords": STOPWORDS,
            "stemmer": STEMMER_LANGUAGE if stemmer is not None else None,
        }
        return cls(model, keys.astype(np.int64), meta, stemmer)

    @property
    def count(self) -> int:
        return int(self.rows.shape[0])

    def search(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The `k` best documents for `query` by BM25 score.

        Documents that share no term with the query are left out, so fewer than `k`
        (possibly none) come back.

        Returns:
            (doc-store rows, int64, shape (m,); scores, float32, shape (m,)), best first.
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        ids = self.model.get_tokens_ids(tokenize([query], self.stemmer)[0])
        if not ids:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        scores = np.asarray(self.model.get_scores_from_ids(ids), dtype=np.float32)
        k = min(k, scores.shape[0])
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        top = top[scores[top] > 0]
        return self.rows[top], scores[top]


def bm25_hits(index: BM25Index, store: DocStore, query: str, k: int) -> list[Hit]:
    """`index`'s best documents for `query` (see `BM25Index.search`), read from `store`.

    Returns:
        Up to `k` hits, best first, scored by BM25; rows `store` no longer holds are
        left out.
    """
    rows, scores = index.search(query, k)
    docs = store.by_rows([int(r) for r in rows])
    return [
        Hit(docs[int(r)][0], float(s), docs[int(r)][1], docs[int(r)][2])
        for r, s in zip(rows, scores, strict=True)
        if int(r) in docs
    ]


def has_bm25(index_dir: Path) -> bool:
    """Whether `index_dir` holds a BM25 index."""
    return (index_dir / BM25_DIR / META_FILE).is_file()


def read_bm25_meta(index_dir: Path) -> dict[str, Any]:
    """Parse ``bm25/meta.json`` of an index folder.

    Raises:
        DataError: no BM25 index, or one of an unsupported format.
    """
    folder = index_dir / BM25_DIR
    if not has_bm25(index_dir):
        raise DataError(
            f"{index_dir} has no BM25 index ({BM25_DIR}/{META_FILE} missing); build it with "
            "`indexer.update.write_bm25(index_dir)`"
        )
    meta: dict[str, Any] = json.loads((folder / META_FILE).read_text())
    if meta.get("format_version") != BM25_FORMAT_VERSION:
        raise DataError(
            f"{folder}: BM25 format {meta.get('format_version')} is not supported "
            f"(expected {BM25_FORMAT_VERSION}); rebuild it with `indexer.update.write_bm25`"
        )
    return meta


def load_bm25(index_dir: Path, *, verify: bool = True) -> BM25Index:
    """Load ``index_dir/bm25``.

    Args:
        index_dir: The index folder.
        verify: Refuse a BM25 index built from another version of ``docs.sqlite``
            (compares sha256 digests; reads the file once).

    Raises:
        DataError: no BM25 index, a stale one, or one that needs PyStemmer when it
            is not installed.
    """
    folder = index_dir / BM25_DIR
    meta = read_bm25_meta(index_dir)
    if verify and meta.get("docs_sha256") != sha256_file(index_dir / DOCSTORE_FILE):
        raise DataError(
            f"{folder} was built from another version of docs.sqlite; rebuild it with "
            "`indexer.update.write_bm25(index_dir)`"
        )
    stemmer = make_stemmer(meta.get("stemmer"))
    if meta.get("stemmer") and stemmer is None:
        raise DataError(
            f"{folder} was built with the {meta['stemmer']} stemmer but PyStemmer is not "
            "installed; install it with `pip install PyStemmer`"
        )
    model = _bm25s().BM25.load(str(folder), load_corpus=False, show_progress=False)
    rows = np.load(folder / ROWS_FILE).astype(np.int64)
    if rows.shape[0] != int(model.scores["num_docs"]):
        raise DataError(
            f"{folder}: {ROWS_FILE} has {rows.shape[0]} rows but the BM25 index has "
            f"{model.scores['num_docs']} documents; rebuild it with `indexer.update.write_bm25`"
        )
    logger.info("loaded BM25 index of %d documents from %s", rows.shape[0], folder)
    return BM25Index(model, rows, meta, stemmer)
