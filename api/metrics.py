"""Prometheus metrics of one app, in its own `CollectorRegistry` (several apps can share
a process, as in tests)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """The service's metrics.

    Attributes:
        registry: This app's registry (what ``GET /metrics`` renders).
        requests: HTTP requests by method, route template and status.
        latency: HTTP request seconds by method and route template.
        encode: Encoder seconds per batch.
        batch_size: Queries and texts to embed per encoder batch.
        search: Search seconds by kind (``faiss`` per batch, ``bm25`` and ``fusion`` per query).
        queries: Queries answered by mode.
        embeddings: Texts embedded by ``POST /v1/embeddings``.
        embedding_tokens: Tokens the model read of those texts (their ``usage``).
        index_documents: Documents in the served index.
        index_generation: Generation of the served index (+1 at each reload).
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "distilsearch_http_requests",
            "HTTP requests by method, route template and status code.",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "distilsearch_http_request_duration_seconds",
            "HTTP request latency by method and route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.encode = Histogram(
            "distilsearch_encode_seconds",
            "Query encoder seconds per micro-batch.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "distilsearch_encode_batch_size",
            "Queries and texts to embed encoded together per micro-batch.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.search = Histogram(
            "distilsearch_search_seconds",
            "Search seconds by kind: faiss (per micro-batch), bm25 and fusion (per query).",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queries = Counter(
            "distilsearch_queries", "Queries answered, by mode.", ["mode"], registry=r
        )
        self.embeddings = Counter(
            "distilsearch_embedding_inputs",
            "Texts embedded by POST /v1/embeddings.",
            registry=r,
        )
        self.embedding_tokens = Counter(
            "distilsearch_embedding_tokens",
            "Tokens the model read of the texts POST /v1/embeddings embedded.",
            registry=r,
        )
        self.index_documents = Gauge(
            "distilsearch_index_documents", "Documents in the served index.", registry=r
        )
        self.index_generation = Gauge(
            "distilsearch_index_generation",
            "Generation of the served index; +1 at each reload.",
            registry=r,
        )

    def observe_batch(self, size: int, encode_s: float, search_s: float | None) -> None:
        """Record one micro-batch (called from the batcher's thread); `search_s` is None
        when the batch held texts to embed only."""
        self.batch_size.observe(size)
        self.encode.observe(encode_s)
        if search_s is not None:
            self.search.labels(kind="faiss").observe(search_s)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
