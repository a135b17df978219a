"""A disk cache of embeddings keyed by model hash and text hash.

Each model has a folder of ``.npz`` shards; each shard holds the 16-byte blake2b
keys of its texts, their float32 vectors, and the seconds the encoder spent on
them, so throughput survives in the cache. Shards are written atomically as
encoding goes, so an interrupted job resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from search.atomic import atomic_path
from search.encoder import Encoder

logger = logging.getLogger(__name__)

_KEY_BYTES = 16
_COMPACT_AT = 64


def cache_key(encoder: Encoder) -> str:
    """The cache folder name of an encoder: its model hash, plus the backend and the
    artifact's content hash unless torch, plus ``-bf16`` for a torch model in bf16.

    An ONNX or int8 artifact shares the model hash of its folder but not its vectors,
    and a re-export or re-quantization (other settings, other fp32 MatMuls) writes a
    new artifact under the same model hash: its vectors must not be read from the old
    one's cache. bf16 vectors agree with fp32 ones to a cosine of about 0.9999
    (`search.precision`), but are kept apart so a result says what computed it.
    """
    if encoder.backend == "torch":
        precision = getattr(encoder, "precision", "fp32")
        return encoder.model_hash if precision == "fp32" else f"{encoder.model_hash}-{precision}"
    artifact = getattr(encoder, "artifact_hash", None)
    suffix = f"-{artifact[:8]}" if artifact else ""
    return f"{encoder.model_hash}-{encoder.backend}{suffix}"


def cache_for(encoder: Encoder, root: Path) -> EmbeddingCache:
    """The embedding cache of `encoder` under `root`."""
    return EmbeddingCache(root, cache_key(encoder), encoder.dim)


def text_key(text: str) -> bytes:
    """The cache key of a text: 16-byte blake2b digest of its UTF-8 bytes."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=_KEY_BYTES).digest()


@dataclass(frozen=True)
class EncodeStats:
    """What one `EmbeddingCache.encode` call did.

    Attributes:
        total: Texts asked for.
        encoded: Texts encoded now (the rest came from the cache).
        seconds: Encoder time spent now.
        cached_seconds: Encoder time the cache recorded for the texts it supplied.
    """

    total: int
    encoded: int
    seconds: float
    cached_seconds: float

    @property
    def docs_per_s(self) -> float:
        """Texts per second of encoder time, over this call's texts (fresh and cached)."""
        spent = self.seconds + self.cached_seconds
        return self.total / spent if spent > 0 else float("nan")


class EmbeddingCache:
    """Embeddings of one model, on disk under ``root/<model_hash>/``.

    Args:
        root: Cache root folder (e.g. ``cache_dir() / "embeddings"``).
        model_hash: Hash of the model (see `search.assets.model_hash`).
        dim: Embedding dimension.
    """

    def __init__(self, root: Path, model_hash: str, dim: int) -> None:
        self.folder = root / model_hash
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dim = dim
        self._index: dict[bytes, tuple[int, int]] = {}
        self._vecs: list[np.ndarray] = []
        self._sec_per_text: list[float] = []
        self._load()

    def __len__(self) -> int:
        return len(self._index)

    def _load(self) -> None:
        shards = sorted(self.folder.glob("shard-*.npz"))
        if len(shards) > _COMPACT_AT:
            shards = [self._compact(shards)]
        for path in shards:
            try:
                with np.load(path) as data:
                    keys, vecs, seconds = data["keys"], data["vecs"], float(data["seconds"])
            except (OSError, ValueError, KeyError) as exc:
                logger.warning("skipping unreadable cache shard %s (%s)", path, exc)
                continue
            if vecs.shape[1] != self.dim:
                logger.warning(
                    "skipping cache shard %s: dim %d != %d", path, vecs.shape[1], self.dim
                )
                continue
            self._add(keys, vecs, seconds / max(len(keys), 1))

    def _add(self, keys: np.ndarray, vecs: np.ndarray, sec_per_text: float) -> None:
        shard = len(self._vecs)
        self._vecs.append(np.asarray(vecs, dtype=np.float32))
        self._sec_per_text.append(sec_per_text)
        for row, key in enumerate(np.asarray(keys, dtype=np.uint8).reshape(-1, _KEY_BYTES)):
            self._index[key.tobytes()] = (shard, row)

    def _write_shard(self, keys: np.ndarray, vecs: np.ndarray, seconds: float) -> None:
        name = f"shard-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.npz"
        with atomic_path(self.folder / name) as tmp:
            np.savez(tmp, keys=keys, vecs=vecs, seconds=np.float64(seconds))

    def _compact(self, shards: list[Path]) -> Path:
        keys, vecs, secs = [], [], 0.0
        for path in shards:
            with np.load(path) as data:
                keys.append(data["keys"])
                vecs.append(data["vecs"])
                secs += float(data["seconds"])
        self._write_shard(np.concatenate(keys), np.concatenate(vecs), secs)
        for path in shards:
            path.unlink(missing_ok=True)
        return sorted(self.folder.glob("shard-*.npz"))[-1]

    def lookup(self, texts: Sequence[str]) -> tuple[np.ndarray, list[int]]:
        """Vectors for cached texts.

        Returns:
            (vectors of shape (len(texts), dim) with zero rows where missing,
            indices of the missing texts).
        """
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        missing = []
        for i, text in enumerate(texts):
            loc = self._index.get(text_key(text))
            if loc is None:
                missing.append(i)
            else:
                out[i] = self._vecs[loc[0]][loc[1]]
        return out, missing

    def encode(
        self,
        encoder: Encoder,
        texts: Sequence[str],
        *,
        batch_size: int = 32,
        chunk_size: int = 256,
        desc: str = "encoding",
        progress: bool = True,
    ) -> tuple[np.ndarray, EncodeStats]:
        """Embed `texts`, encoding only those not cached and caching them as it goes.

        Missing texts are encoded longest-first in chunks of `chunk_size` (length-sorted
        batches waste no padding); each chunk is written as a shard before the next starts.

        Returns:
            (float32 array (len(texts), dim), normalised rows, in input order; stats).
        """
        out, missing = self.lookup(texts)
        cached_seconds = 0.0
        missing_set = set(missing)
        for i, text in enumerate(texts):
            if i not in missing_set:
                cached_seconds += self._sec_per_text[self._index[text_key(text)][0]]
        # Duplicates among the missing texts are encoded once.
        first: dict[bytes, int] = {}
        for i in missing:
            first.setdefault(text_key(texts[i]), i)
        todo = sorted(first.values(), key=lambda i: -len(texts[i]))
        spent = 0.0
        bar = tqdm(total=len(todo), desc=desc, unit="text", disable=not progress or not todo)
        for start in range(0, len(todo), chunk_size):
            idx = todo[start : start + chunk_size]
            t0 = time.perf_counter()
            vecs = encoder.encode([texts[i] for i in idx], batch_size=batch_size)
            seconds = time.perf_counter() - t0
            spent += seconds
            raw = b"".join(text_key(texts[i]) for i in idx)
            keys = np.frombuffer(raw, dtype=np.uint8).reshape(len(idx), _KEY_BYTES)
            self._write_shard(keys, vecs, seconds)
            self._add(keys, vecs, seconds / len(idx))
            bar.update(len(idx))
        bar.close()
        if missing:
            out, still = self.lookup(texts)
            assert not still, "every missing text was just encoded"
        stats = EncodeStats(len(texts), len(todo), spent, cached_seconds)
        return out, stats
