"""The micro-batcher: concurrent queries share encoder calls and get the same answers."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from api.microbatch import MicroBatcher, OverloadedError
from indexer.build import build_index
from search.encoder import load_encoder
from search.retriever import Retriever

QUERIES = [f"query number {i} about cats and dogs" for i in range(24)]


@pytest.fixture(scope="module")
def retriever(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Retriever]:
    docs = [(f"d{i}", f"title {i}", f"document {i} text about topic {i % 5}") for i in range(40)]
    out = tmp_path_factory.mktemp("batching") / "idx"
    build_index(
        load_encoder(tiny_model), docs, out, model_path=str(tiny_model), progress=False, bm25=False
    )
    r = Retriever.open(out)
    yield r
    r.close()


def run_all(batcher: MicroBatcher, retriever: Retriever, k: int = 3) -> list:
    async def main() -> list:
        return await asyncio.gather(*(batcher.search(retriever, q, k) for q in QUERIES))

    batcher.start()
    try:
        return asyncio.run(main())
    finally:
        batcher.stop()


def test_concurrent_queries_are_batched_with_the_same_answers(retriever: Retriever) -> None:
    sizes: list[int] = []
    batcher = MicroBatcher(max_batch=8, max_wait_ms=20, on_batch=lambda n, e, s: sizes.append(n))
    results = run_all(batcher, retriever)
    assert sum(sizes) == len(QUERIES) and max(sizes) > 1 and max(sizes) <= 8
    for query, (hits, timing) in zip(QUERIES, results, strict=True):
        alone = retriever.search(query, 3)
        assert [h.id for h in hits] == [h.id for h in alone]
        np.testing.assert_allclose([h.score for h in hits], [h.score for h in alone], atol=1e-5)
        assert 1 <= timing.size <= 8 and timing.encode_ms > 0


def test_batch_size_one_is_one_at_a_time(retriever: Retriever) -> None:
    sizes: list[int] = []
    run_all(MicroBatcher(max_batch=1, on_batch=lambda n, e, s: sizes.append(n)), retriever)
    assert sizes == [1] * len(QUERIES)


def test_several_workers_answer_every_query_and_stop_promptly(retriever: Retriever) -> None:
    threads: set[str] = set()

    def seen(n: int, e: float, s: float) -> None:
        threads.add(threading.current_thread().name)

    batcher = MicroBatcher(max_batch=2, workers=3, search_threads=1, on_batch=seen)
    started = time.perf_counter()
    results = run_all(batcher, retriever)
    assert time.perf_counter() - started < 8  # stop() does not wait out a join timeout
    assert not batcher._threads
    for query, (hits, _) in zip(QUERIES, results, strict=True):
        assert [h.id for h in hits] == [h.id for h in retriever.search(query, 3)]
    assert threads <= {f"micro-batcher-{i}" for i in range(3)} and threads


def test_mixed_k_in_one_batch(retriever: Retriever) -> None:
    async def main(batcher: MicroBatcher) -> list:
        return await asyncio.gather(*(batcher.search(retriever, "cats", k) for k in (1, 5, 2)))

    batcher = MicroBatcher(max_batch=8, max_wait_ms=20)
    batcher.start()
    try:
        got = asyncio.run(main(batcher))
    finally:
        batcher.stop()
    assert [len(hits) for hits, _ in got] == [1, 5, 2]
    assert got[0][0][0].id == got[1][0][0].id


def test_a_full_queue_is_overload_not_a_hang(retriever: Retriever) -> None:
    batcher = MicroBatcher(max_batch=1, max_queue=1)

    async def main() -> list:
        return await asyncio.gather(
            *(batcher.search(retriever, q, 1) for q in QUERIES[:6]), return_exceptions=True
        )

    batcher.start()
    try:
        outcomes = asyncio.run(main())
    finally:
        batcher.stop()
    assert any(isinstance(o, OverloadedError) for o in outcomes)
    assert any(isinstance(o, tuple) for o in outcomes)


def test_bad_settings_and_not_started(retriever: Retriever) -> None:
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(max_batch=0)
    with pytest.raises(ValueError, match="workers"):
        MicroBatcher(workers=0)
    with pytest.raises(RuntimeError, match="not running"):
        asyncio.run(MicroBatcher().search(retriever, "x", 1))


def test_texts_to_embed_share_encoder_calls_with_queries(retriever: Retriever) -> None:
    """8 searches and 8 texts to embed, sent at once: a batch holds both (one encoder
    call), each text gets the vector the encoder gives it alone, and a batch of texts
    only reports no search time."""
    calls: list[tuple[int, float | None]] = []
    batcher = MicroBatcher(
        max_batch=32, max_wait_ms=50, on_batch=lambda n, e, s: calls.append((n, s))
    )
    texts = QUERIES[8:16]

    async def mixed() -> list:
        searches = [batcher.search(retriever, q, 3) for q in QUERIES[:8]]
        return await asyncio.gather(
            *searches, *(batcher.embed(retriever.encoder, t) for t in texts)
        )

    async def embeds_only() -> list:
        return await asyncio.gather(*(batcher.embed(retriever.encoder, t) for t in texts))

    batcher.start()
    try:
        got = asyncio.run(mixed())
        first = list(calls)
        alone = asyncio.run(embeds_only())
    finally:
        batcher.stop()
    want = retriever.encoder.encode(texts)
    for (vector, timing), expected in zip(got[8:], want, strict=True):
        assert vector.dtype == np.float32 and vector.shape == (retriever.encoder.dim,)
        np.testing.assert_allclose(vector, expected, atol=1e-5)
        assert timing.size >= 1 and timing.encode_ms > 0
    for query, (hits, _) in zip(QUERIES[:8], got[:8], strict=True):
        assert [h.id for h in hits] == [h.id for h in retriever.search(query, 3)]
    assert sum(n for n, _ in first) == 16
    assert any(n > 8 and s is not None for n, s in first), first  # queries and texts together
    for (vector, _), expected in zip(alone, want, strict=True):
        np.testing.assert_allclose(vector, expected, atol=1e-5)
    assert all(s is None for _, s in calls[len(first) :]), calls
