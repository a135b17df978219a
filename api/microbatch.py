"""Micro-batching of dense searches and embeddings: many requests, one encoder call.

Requests put their query (or, for ``/v1/embeddings``, their text) on a bounded queue
and await a future. Each of ``workers`` threads takes the first waiting query, then
every query already queued behind it (up to ``max_batch``); when that found company —
the service is under load — it waits up to ``max_wait_ms`` for more. It then encodes
the batch in one encoder call (in sub-batches of ``encode_batch_size`` queries, which
an ONNX encoder runs on all cores at once) and searches FAISS with all the queries'
vectors at once; a text to embed gets its vector. A lone query is never held back,
so latency at low load is that of one-at-a-time encoding; ``max_batch=1`` turns
batching off. The event loop never encodes.

Why sub-batches of one query by default: on a CPU a transformer's cost grows with
the tokens it is fed, padding included, so encoding queries of different lengths
together costs more than encoding them apart; what batching saves there is FAISS
passes over the index (one scan serves every query of the batch). Parallelism is
what makes a CPU serve more: onnxruntime and FAISS release the GIL, so one-thread
encodes side by side serve more queries than one encode on every thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np

from search.encoder import Encoder
from search.retriever import Retriever
from search.types import Hit

logger = logging.getLogger(__name__)


class OverloadedError(RuntimeError):
    """The queue is full; the caller should answer 503 and the client retry later."""


@dataclass(frozen=True)
class BatchTiming:
    """How one query's batch went.

    Attributes:
        size: Queries encoded together.
        queue_ms: Time the query waited before its batch started.
        encode_ms: Encoder time of the whole batch.
        search_ms: FAISS + doc-store time of the whole batch.
    """

    size: int
    queue_ms: float
    encode_ms: float
    search_ms: float


Answer = list[Hit] | np.ndarray
"""A search's hits, or an embedding's float32 (dim,) vector."""


@dataclass
class _Job:
    encoder: Encoder
    retriever: Retriever | None  # None: the text's vector is the answer
    text: str
    k: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[tuple[Answer, BatchTiming]]
    enqueued: float


_STOP = object()


def _resolve(
    future: asyncio.Future[tuple[Answer, BatchTiming]],
    result: tuple[Answer, BatchTiming] | None,
    error: BaseException | None,
) -> None:
    if future.done():  # the request was cancelled (client went away)
        return
    if error is not None:
        future.set_exception(error)
    else:
        assert result is not None
        future.set_result(result)


class MicroBatcher:
    """Encodes and searches queries from concurrent requests in batches.

    Args:
        max_batch: Most queries per encoder call (1: no batching).
        max_wait_ms: Longest wait for more queries once a batch has two or more.
        max_queue: Queries that may wait; one more raises `OverloadedError`.
        on_batch: Called on the worker thread after each batch with
            ``(size, encode seconds, search seconds)`` (metrics); search seconds are
            None for a batch of texts to embed only.
        search_threads: FAISS OpenMP threads of each worker thread (OpenMP settings
            are per thread); None: FAISS's default, every core.
        workers: Threads that encode and search batches at the same time.
        encode_batch_size: Queries per sub-batch in the encoder call of a batch.
    """

    def __init__(
        self,
        *,
        max_batch: int = 32,
        max_wait_ms: float = 2.0,
        max_queue: int = 1024,
        on_batch: Callable[[int, float, float | None], None] | None = None,
        search_threads: int | None = None,
        workers: int = 1,
        encode_batch_size: int = 1,
    ) -> None:
        if min(max_batch, max_queue, workers, encode_batch_size) < 1 or max_wait_ms < 0:
            raise ValueError(
                "need max_batch, max_queue, workers, encode_batch_size >= 1 and max_wait_ms "
                f">= 0; got {max_batch}, {max_queue}, {workers}, {encode_batch_size}, "
                f"{max_wait_ms}"
            )
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self._queue: queue.Queue[_Job | object] = queue.Queue(maxsize=max_queue)
        self._on_batch = on_batch
        self._search_threads = search_threads
        self.workers = workers
        self.encode_batch_size = encode_batch_size
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        if not self._threads:
            self._threads = [
                threading.Thread(target=self._run, name=f"micro-batcher-{i}", daemon=True)
                for i in range(self.workers)
            ]
            for thread in self._threads:
                thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the queued work, then stop the worker threads."""
        if not self._threads:
            return
        for _ in self._threads:  # each worker takes one stop sentinel and ends
            self._queue.put(_STOP, timeout=timeout)
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    async def search(
        self, retriever: Retriever, query: str, k: int
    ) -> tuple[list[Hit], BatchTiming]:
        """Top-`k` dense hits for `query` with `retriever`, batched with other requests.

        Raises:
            OverloadedError: too many queries are waiting.
            RuntimeError: the batcher is not running.
        """
        hits, timing = await self._submit(retriever.encoder, retriever, query, k)
        assert isinstance(hits, list)
        return hits, timing

    async def embed(self, encoder: Encoder, text: str) -> tuple[np.ndarray, BatchTiming]:
        """The vector of `text` by `encoder`, encoded in one call with the other texts
        and queries of `encoder` waiting (``/v1/embeddings`` and dense searches batch
        together).

        Returns:
            float32 (dim,), L2-normalised, and the batch's timing (``search_ms`` 0
            when the batch held no search).

        Raises:
            OverloadedError: too many texts and queries are waiting.
            RuntimeError: the batcher is not running.
        """
        vector, timing = await self._submit(encoder, None, text, 0)
        assert isinstance(vector, np.ndarray)
        return vector, timing

    async def _submit(
        self, encoder: Encoder, retriever: Retriever | None, text: str, k: int
    ) -> tuple[Answer, BatchTiming]:
        if not self._threads:
            raise RuntimeError("the micro-batcher is not running")
        loop = asyncio.get_running_loop()
        job = _Job(encoder, retriever, text, k, loop, loop.create_future(), time.perf_counter())
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise OverloadedError(
                f"{self._queue.maxsize} queries are already waiting; retry shortly"
            ) from None
        return await job.future

    def _run(self) -> None:
        if self._search_threads is not None:
            faiss.omp_set_num_threads(self._search_threads)
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            batch = [first]
            stopping = self._collect(batch)
            self._process([j for j in batch if isinstance(j, _Job)])
        self._fail_leftovers()

    def _collect(self, batch: list[_Job | object]) -> bool:
        """Add queued jobs to `batch`; True when the stop sentinel was met."""
        deadline = None
        while len(batch) < self.max_batch:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                if len(batch) < 2 or self.max_wait <= 0:
                    return False
                deadline = deadline or time.perf_counter() + self.max_wait
                left = deadline - time.perf_counter()
                if left <= 0:
                    return False
                try:
                    job = self._queue.get(timeout=left)
                except queue.Empty:
                    return False
            if job is _STOP:
                return True
            batch.append(job)
        return False

    def _process(self, jobs: list[_Job]) -> None:
        jobs = [j for j in jobs if not j.future.done()]
        groups: dict[int, list[_Job]] = {}
        for job in jobs:  # one encoder call per encoder (an index swap may bring two)
            groups.setdefault(id(job.encoder), []).append(job)
        for group in groups.values():
            started = time.perf_counter()
            try:
                answers, encoded, searched = self._answer(group)
                done = time.perf_counter()
            except Exception as exc:
                logger.exception("batch of %d queries failed", len(group))
                for job in group:
                    self._deliver(job, None, exc)
                continue
            search_s = done - encoded if searched else None
            if self._on_batch is not None:
                self._on_batch(len(group), encoded - started, search_s)
            for job, answer in zip(group, answers, strict=True):
                timing = BatchTiming(
                    size=len(group),
                    queue_ms=1000 * (started - job.enqueued),
                    encode_ms=1000 * (encoded - started),
                    search_ms=1000 * (search_s or 0.0),
                )
                self._deliver(job, (answer, timing), None)

    def _answer(self, group: list[_Job]) -> tuple[list[Answer], float, bool]:
        """Encode the texts of `group` (one encoder) in one call, then search each
        retriever's queries with all their vectors at once.

        Returns:
            Each job's answer (hits or its vector), when encoding ended
            (`time.perf_counter`), and whether anything was searched.
        """
        vecs = group[0].encoder.encode([j.text for j in group], batch_size=self.encode_batch_size)
        encoded = time.perf_counter()
        answers: list[Answer] = list(vecs)
        searches: dict[int, list[int]] = {}  # a reload may put two retrievers in a batch
        for i, job in enumerate(group):
            if job.retriever is not None:
                searches.setdefault(id(job.retriever), []).append(i)
        for rows in searches.values():
            retriever = group[rows[0]].retriever
            assert retriever is not None
            found = retriever.search_vectors(vecs[rows], max(group[i].k for i in rows))
            for i, hits in zip(rows, found, strict=True):
                answers[i] = hits[: group[i].k]
        return answers, encoded, bool(searches)

    @staticmethod
    def _deliver(
        job: _Job, result: tuple[Answer, BatchTiming] | None, error: BaseException | None
    ) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting
            job.loop.call_soon_threadsafe(_resolve, job.future, result, error)

    def _fail_leftovers(self) -> None:
        stops = 0
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(job, _Job):
                self._deliver(job, None, RuntimeError("the service is stopping"))
            else:
                stops += 1
        for _ in range(stops):  # the other workers' sentinels go back for them
            self._queue.put(_STOP)  # blocks at most while the other workers drain
