"""The doc store of an index folder: SQLite, one row per live document.

``row`` is the integer id FAISS holds for the document's vector; ``id`` is the
corpus's own (string) id, so the ``docs`` table is also the index's id map.
``tombstones`` lists rows whose vectors are still in the FAISS index but whose
documents were deleted or replaced (index types that cannot delete, e.g. HNSW);
searchers skip them, and a rebuild or compaction drops them.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    row INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tombstones (row INTEGER PRIMARY KEY);
"""

_MAX_PARAMS = 500  # bound parameters per statement, well under SQLite's limit


def _batches(items: Sequence[str] | Sequence[int]) -> Iterable[Sequence[str] | Sequence[int]]:
    for i in range(0, len(items), _MAX_PARAMS):
        yield items[i : i + _MAX_PARAMS]


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
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(SCHEMA)
        tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master")}
        self._has_tombstones = "tombstones" in tables  # absent in format-1 folders

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
        out: dict[int, tuple[str, str, str]] = {}
        with self._lock:
            for part in _batches([int(r) for r in rows]):
                marks = ",".join("?" * len(part))
                cur = self._conn.execute(
                    f"SELECT row, id, title, text FROM docs WHERE row IN ({marks})", list(part)
                )
                out.update({r: (i, t, x) for r, i, t, x in cur.fetchall()})
        return out

    def by_id(self, doc_id: str) -> tuple[int, str, str] | None:
        """``(row, title, text)`` of a document, or None."""
        with self._lock:
            got = self._conn.execute(
                "SELECT row, title, text FROM docs WHERE id = ?", (doc_id,)
            ).fetchone()
        return None if got is None else (int(got[0]), got[1], got[2])

    def rows_of(self, ids: Sequence[str]) -> dict[str, int]:
        """Map document ids to their rows; unknown ids are left out."""
        out: dict[str, int] = {}
        with self._lock:
            for part in _batches(list(ids)):
                marks = ",".join("?" * len(part))
                cur = self._conn.execute(
                    f"SELECT id, row FROM docs WHERE id IN ({marks})", list(part)
                )
                out.update({i: int(r) for i, r in cur.fetchall()})
        return out

    def delete_rows(self, rows: Sequence[int]) -> None:
        """Remove documents by row and commit."""
        with self._lock, self._conn:
            self._conn.executemany("DELETE FROM docs WHERE row = ?", [(int(r),) for r in rows])

    def ids(self) -> list[str]:
        """All document ids, in row order."""
        with self._lock:
            return [r[0] for r in self._conn.execute("SELECT id FROM docs ORDER BY row")]

    def rows(self) -> np.ndarray:
        """All live rows, ascending, as int64."""
        with self._lock:
            got = [r[0] for r in self._conn.execute("SELECT row FROM docs ORDER BY row")]
        return np.asarray(got, dtype=np.int64)

    def next_row(self) -> int:
        """One past the largest row in use by a document or a tombstone."""
        with self._lock:
            tops = [self._conn.execute("SELECT MAX(row) FROM docs").fetchone()[0]]
            if self._has_tombstones:
                tops.append(self._conn.execute("SELECT MAX(row) FROM tombstones").fetchone()[0])
        used = [int(t) for t in tops if t is not None]
        return max(used) + 1 if used else 0

    def tombstones(self) -> np.ndarray:
        """Rows still in the FAISS index whose documents are gone, ascending, int64."""
        if not self._has_tombstones:
            return np.zeros(0, dtype=np.int64)
        with self._lock:
            got = [r[0] for r in self._conn.execute("SELECT row FROM tombstones ORDER BY row")]
        return np.asarray(got, dtype=np.int64)

    def add_tombstones(self, rows: Iterable[int]) -> None:
        """Mark rows dead and commit."""
        with self._lock, self._conn:
            self._conn.executemany(
                "INSERT OR IGNORE INTO tombstones(row) VALUES (?)", [(int(r),) for r in rows]
            )

    def clear_tombstones(self) -> None:
        """Forget all tombstones (after their vectors left the index) and commit."""
        with self._lock, self._conn:
            self._conn.execute("DELETE FROM tombstones")
