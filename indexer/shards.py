"""Checkpoints of an indexing job: encoded vectors as ``.npy`` shards, in a work folder.

A work folder (by default ``.<out>.work`` beside the output folder) holds::

    job.json                  what the job is (input fingerprint, model hash, shard size…);
                              a work folder of another job is wiped, never mixed in
    docs.sqlite               the doc store being filled
    shards/shard-000042.npy        float32 (m, dim) vectors of shard 42, L2-normalised
    shards/shard-000042.ids.npy    int64 (m,) doc store rows of those vectors
    lock                      held (flock) while a job runs

Shard ``n`` holds rows ``[n * shard_size, (n + 1) * shard_size)``. Both files are
written to a temp name and ``os.replace``d, ids first: a shard is complete when its
vectors file exists, so a job killed at any moment resumes from complete shards only.
"""

from __future__ import annotations

import fcntl
import json
import logging
import re
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from search.atomic import atomic_path, atomic_write_text
from search.encoder import Encoder
from search.types import DataError

logger = logging.getLogger(__name__)

JOB_FILE = "job.json"
SHARD_DIR = "shards"
_SHARD_RE = re.compile(r"shard-(\d{6,})\.npy")


def _save_npy(path: Path, array: np.ndarray) -> None:
    """Write one ``.npy`` atomically (`search.atomic.atomic_path`)."""
    with atomic_path(path) as tmp:
        np.save(tmp, array)


def shard_paths(shard_dir: Path, number: int) -> tuple[Path, Path]:
    """``(vectors, ids)`` file paths of shard `number`."""
    return shard_dir / f"shard-{number:06d}.npy", shard_dir / f"shard-{number:06d}.ids.npy"


def write_shard(shard_dir: Path, number: int, ids: np.ndarray, vecs: np.ndarray) -> None:
    """Checkpoint one shard: its ids, then its vectors (the commit), each atomically.

    Args:
        shard_dir: The shards folder (may be shared by cluster workers).
        number: Shard number.
        ids: int64 (m,) doc store rows.
        vecs: float32 (m, dim) vectors, L2-normalised.
    """
    if len(ids) != len(vecs):
        raise ValueError(f"shard {number}: {len(ids)} ids but {len(vecs)} vectors")
    shard_dir.mkdir(parents=True, exist_ok=True)
    vec_path, id_path = shard_paths(shard_dir, number)
    _save_npy(id_path, np.ascontiguousarray(ids, dtype=np.int64))
    _save_npy(vec_path, np.ascontiguousarray(vecs, dtype=np.float32))


def read_shard(shard_dir: Path, number: int, *, mmap: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(vectors (m, dim) float32, ids (m,) int64)`` of a complete shard."""
    vec_path, id_path = shard_paths(shard_dir, number)
    vecs = np.load(vec_path, mmap_mode="r" if mmap else None)
    return vecs, np.load(id_path)


def shard_holds(shard_dir: Path, number: int, ids: np.ndarray) -> bool:
    """Whether shard `number` is complete and holds exactly `ids`."""
    vec_path, id_path = shard_paths(shard_dir, number)
    if not vec_path.is_file() or not id_path.is_file():
        return False
    try:
        got = np.load(id_path)
        rows = np.load(vec_path, mmap_mode="r").shape[0]
    except (OSError, ValueError):  # unreadable: treat as absent and re-encode
        return False
    return rows == len(ids) and np.array_equal(got, ids)


def complete_shards(shard_dir: Path) -> list[int]:
    """Numbers of the complete shards in `shard_dir`, ascending."""
    if not shard_dir.is_dir():
        return []
    found = (_SHARD_RE.fullmatch(p.name) for p in shard_dir.iterdir())
    return sorted(int(m.group(1)) for m in found if m)


def encode_sorted(
    encoder: Encoder, texts: Sequence[str], *, batch_size: int = 32, cache: Any = None
) -> np.ndarray:
    """Encode `texts` in batches of similar length (longest first), in input order.

    Args:
        encoder: The model.
        texts: Texts to embed.
        batch_size: Most texts per forward pass (long texts go in fewer; see
            `search.batching`).
        cache: An `EmbeddingCache` to read and fill, or None.

    Returns:
        float32 (len(texts), dim), rows L2-normalised.
    """
    if cache is not None:
        vecs, _ = cache.encode(encoder, list(texts), batch_size=batch_size, progress=False)
        return np.asarray(vecs, dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out = np.empty((len(texts), encoder.dim), dtype=np.float32)
    if texts:
        out[order] = encoder.encode([texts[i] for i in order], batch_size=batch_size)
    return out


class WorkDir:
    """The work folder of one indexing job, locked while open.

    Args:
        path: The folder (created if missing).
        job: What identifies the job; a folder holding another job's checkpoints is
            wiped. Must be JSON-serialisable and hold ``shard_size``.
        resume: Keep checkpoints of the same job (else start from scratch).

    Raises:
        DataError: another job holds the folder.
    """

    def __init__(self, path: Path, job: dict[str, Any], *, resume: bool = True) -> None:
        self.path = path
        self.job = job
        self.shard_size = int(job["shard_size"])
        path.mkdir(parents=True, exist_ok=True)
        self._lock: IO[str] | None = open(path / "lock", "w")  # noqa: SIM115 (held open)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._lock.close()
            self._lock = None
            raise DataError(
                f"another indexing job is using {path}; wait for it to finish (or stop it) "
                "before starting this one"
            ) from exc
        old = self._read_job()
        if old != job or not resume:
            if old is not None:
                why = "starting over" if not resume else "the input or settings changed"
                logger.warning("discarding checkpoints in %s (%s)", path, why)
            self._clear()
            atomic_write_text(path / JOB_FILE, json.dumps(job, indent=2, sort_keys=True))
        elif self.shards():
            logger.info("resuming from %d checkpointed shards in %s", len(self.shards()), path)

    def _read_job(self) -> dict[str, Any] | None:
        try:
            got: dict[str, Any] = json.loads((self.path / JOB_FILE).read_text())
            return got
        except (OSError, ValueError):
            return None

    def _clear(self) -> None:
        for child in self.path.iterdir():
            if child.name == "lock":
                continue
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()

    @property
    def shard_dir(self) -> Path:
        return self.path / SHARD_DIR

    @property
    def store_path(self) -> Path:
        return self.path / "docs.sqlite"

    def shards(self) -> list[int]:
        return complete_shards(self.shard_dir)

    def iter_shards(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(vectors, ids)`` of every complete shard, in order, memory-mapped."""
        for number in self.shards():
            yield read_shard(self.shard_dir, number)

    def vectors_of(self, rows: np.ndarray) -> np.ndarray:
        """float32 (len(rows), dim) vectors of the given rows, read from the shards."""
        rows = np.asarray(rows, dtype=np.int64)
        dim = int(self.job["dim"])
        out = np.empty((len(rows), dim), dtype=np.float32)
        numbers = rows // self.shard_size
        for number in np.unique(numbers):
            vecs, ids = read_shard(self.shard_dir, int(number))
            pick = np.flatnonzero(numbers == number)
            offsets = rows[pick] - int(ids[0])
            out[pick] = vecs[offsets]
        return out

    def close(self, *, remove: bool = False) -> None:
        """Release the lock; with `remove`, delete the folder (the job is done)."""
        if self._lock is not None:
            if remove:
                shutil.rmtree(self.path, ignore_errors=True)
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def __enter__(self) -> WorkDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
