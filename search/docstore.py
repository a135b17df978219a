"""The doc store of an index folder: SQLite, one row per document.

``row`` is the integer id FAISS holds for the document's vector; ``id`` is the
corpus's own (string) id.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    row INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    text TEXT NOT NULL
);
"""


class DocStore:
    """Thread-safe access to ``docs.sqlite``.

    Args:
        path: The SQLite file.
        readonly: Open read-only (searchers) or read-write (the indexer).
    """

    def __init__(self, path: Path, *, readonly: bool = True) -> None:
        self.path = path
        uri = f"file:{path}?mode=ro" if readonly else f"file:{path}?mode=rwc"
        self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        self._lock = threading.Lock()
        if not readonly:
            self._conn.executescript(SCHEMA)

    def close(self) -> None:
        self._conn.close()

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM docs").fetchone()[0])

    def add(self, rows: Iterable[tuple[int, str, str, str]]) -> None:
        """Insert or replace ``(row, id, title, text)`` tuples and commit."""
        with self._lock, self._conn:
            self._conn.executemany(
                "INSERT OR REPLACE INTO docs(row, id, title, text) VALUES (?, ?, ?, ?)", rows
            )

    def by_rows(self, rows: Sequence[int]) -> dict[int, tuple[str, str, str]]:
        """Map FAISS row ids to ``(id, title, text)``; unknown rows are left out."""
        if not rows:
            return {}
        marks = ",".join("?" * len(rows))
        with self._lock:
            cur = self._conn.execute(
                f"SELECT row, id, title, text FROM docs WHERE row IN ({marks})",
                [int(r) for r in rows],
            )
            return {r: (i, t, x) for r, i, t, x in cur.fetchall()}

    def by_id(self, doc_id: str) -> tuple[int, str, str] | None:
        """``(row, title, text)`` of a document, or None."""
        with self._lock:
            got = self._conn.execute(
                "SELECT row, title, text FROM docs WHERE id = ?", (doc_id,)
            ).fetchone()
        return None if got is None else (int(got[0]), got[1], got[2])

    def ids(self) -> list[str]:
        """All document ids, in row order."""
        with self._lock:
            return [r[0] for r in self._conn.execute("SELECT id FROM docs ORDER BY row")]
