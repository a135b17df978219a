from pathlib import Path

import numpy as np

from search.embed_cache import EmbeddingCache, text_key
from search.encoder import load_encoder

TEXTS = [f"document number {i} about topic {i % 3}" for i in range(40)]


def test_cache_returns_what_the_encoder_gives_in_input_order(
    tiny_model: Path, tmp_path: Path
) -> None:
    enc = load_encoder(tiny_model)
    cache = EmbeddingCache(tmp_path, enc.model_hash, enc.dim)
    vecs, stats = cache.encode(enc, TEXTS, chunk_size=7, progress=False)
    assert stats.encoded == len(TEXTS) and stats.total == len(TEXTS)
    np.testing.assert_allclose(vecs, enc.encode(TEXTS), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


def test_reopened_cache_encodes_only_new_texts(tiny_model: Path, tmp_path: Path) -> None:
    enc = load_encoder(tiny_model)
    first = EmbeddingCache(tmp_path, enc.model_hash, enc.dim)
    part, _ = first.encode(enc, TEXTS[:25], chunk_size=10, progress=False)
    # A new process (a resumed job) sees every shard written so far.
    again = EmbeddingCache(tmp_path, enc.model_hash, enc.dim)
    assert len(again) == 25
    vecs, stats = again.encode(enc, TEXTS + TEXTS[:3], progress=False)
    assert stats.encoded == 15
    np.testing.assert_array_equal(vecs[:25], part)
    np.testing.assert_array_equal(vecs[40:], vecs[:3])
    assert stats.cached_seconds > 0 and np.isfinite(stats.docs_per_s)


def test_keys_with_trailing_zero_bytes_round_trip(tiny_model: Path, tmp_path: Path) -> None:
    # numpy's fixed-width bytes strip trailing NULs; keys must survive them.
    texts = [t for t in (f"t{i}" for i in range(5000)) if text_key(t).endswith(b"\0")][:3]
    assert texts, "some short texts hash to a key ending in a zero byte"
    enc = load_encoder(tiny_model)
    EmbeddingCache(tmp_path, enc.model_hash, enc.dim).encode(enc, texts, progress=False)
    again = EmbeddingCache(tmp_path, enc.model_hash, enc.dim)
    _, missing = again.lookup(texts)
    assert missing == []


def test_many_shards_are_compacted_without_loss(tiny_model: Path, tmp_path: Path) -> None:
    enc = load_encoder(tiny_model)
    cache = EmbeddingCache(tmp_path, enc.model_hash, enc.dim)
    many = [f"short text {i}" for i in range(130)]
    vecs, _ = cache.encode(enc, many, chunk_size=2, progress=False)
    assert len(list((tmp_path / enc.model_hash).glob("shard-*.npz"))) == 65
    again = EmbeddingCache(tmp_path, enc.model_hash, enc.dim)
    assert len(list((tmp_path / enc.model_hash).glob("shard-*.npz"))) == 1
    got, missing = again.lookup(many)
    assert missing == []
    np.testing.assert_array_equal(got, vecs)
