"""Load test of the HTTP service: student vs teacher, micro-batching on vs off, in one run.

    python bench/load.py [--student all-MiniLM-L6-v2|PATH] [--requests 400]
                         [--levels 1,8,16,32] [--rss-requests 10000] [--teacher-docs N]
                         [--p99-ms 25] [--no-capacity] [--out bench/out/load]
    python bench/load.py --scenario embeddings [--student ...] [--embed-inputs 1]
                         [--levels 1,8,16,32] [--requests 400] [--out bench/out/load-embeddings]

Builds (once, kept under ``--index-cache``, default ~/.cache/distilsearch/bench) a Flat
index of SciFact for the student and one for the teacher from the embedding cache, and
starts three real servers (`distilsearch serve`, uvicorn on 127.0.0.1, free ports): the
student, the student with one-at-a-time encoding (``DISTILSEARCH_BATCH_MAX_SIZE=1``)
and the teacher. Each concurrency level drives them with SciFact test queries over
HTTP in short rounds that alternate between the servers, so load from other processes
falls on all of them alike: a bounded number of requests, bounded in time too. Prints
p50/p95/p99 latency, QPS and errors per level and server; student QPS over teacher
QPS; the gain of micro-batching; and the student's RSS before and after
``--rss-requests`` more requests.

Then the capacity at a latency bound, for the student and the teacher in alternating
levels: the highest request rate at fixed arrival times (open loop,
`bench/open_loop.py`) whose p99 stays at or under ``--p99-ms`` with no errors, found by
doubling then bisection, each level bounded in requests and seconds; and the server
process's CPU milliseconds per request at that rate (psutil, user + system, over the
level). Latency counts from each request's scheduled time, and the client's own lag is
printed beside it: a level whose lag is large measured the client, not the server.

The load comes from wrk (``apt-get install wrk``; one C thread, ``bench/wrk_search.lua``)
when it is installed, else from httpx (async Python). The client shares the
machine's cores with the servers, and a Python client costs about as much CPU per
request as the server does: on 2 cores httpx capped the student near 100 QPS.

``--scenario embeddings`` measures the OpenAI-compatible ``POST /v1/embeddings``
beside ``POST /search`` instead: one student server, the same SciFact test queries
(``--embed-inputs`` of them per embeddings request), closed-loop levels in rounds
that alternate between the two routes (httpx client); it prints latency and
requests/s of each route and the texts/s of embeddings against the search QPS.

The teacher's corpus embeddings come from the embedding cache only: with
``--teacher-docs cached`` (the default) the teacher index holds the documents whose
embeddings are cached, so this script never encodes the corpus with the teacher.
Query encoding, the thing measured, is the same either way.

Writes ``results.json`` (every level, the ratios, the capacity search, the RSS, and
the run's provenance: command, commit, date, machine and whether it was idle) and
``table.md`` into ``--out`` (default ``bench/out/load``, or ``bench/out/load-embeddings``
for ``--scenario embeddings``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from bench.open_loop import (
    CapacitySearch,
    OpenLoopResult,
    http_post,
    level_size,
    run_open_loop,
)
from bench.provenance import Provenance, write
from indexer.build import build_index
from search.assets import cache_dir, embeddings_dir, resolve_model
from search.corpus import load_beir
from search.embed_cache import cache_for
from search.encoder import Encoder, load_encoder
from search.index_folder import read_index_manifest
from search.types import DataError, document_text

DEFAULT_DATA = Path(os.environ.get("DISTILSEARCH_DATA", "../shared/data/beir")) / "scifact"
READY_TIMEOUT_S = 600
WRK = shutil.which("wrk") or "wrk"
WRK_SCRIPT = Path(__file__).with_name("wrk_search.lua")
OUT = Path(__file__).resolve().parent / "out"
WARMUP = 32
K = 10


@dataclass
class Level:
    """One concurrency level against one server."""

    server: str
    clients: int
    requests: int
    errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    qps: float


def _docs(data: Path) -> tuple[list[tuple[str, str, str]], list[str]]:
    corpus, queries, qrels = load_beir(data, "test")
    docs = [(i, d.get("title", ""), d["text"]) for i, d in corpus.items()]
    return docs, [queries[q] for q in queries if q in qrels]


def _index(
    name: str,
    encoder: Encoder,
    model: str,
    docs: list[tuple[str, str, str]],
    root: Path,
    *,
    cached_only: bool,
) -> Path:
    """A Flat index of `docs` for `encoder` under `root`, built once from the cache."""
    cache = cache_for(encoder, embeddings_dir())
    if cached_only:
        _, missing = cache.lookup([document_text(t, x) for _, t, x in docs])
        gone = set(missing)
        docs = [d for i, d in enumerate(docs) if i not in gone]
        if not docs:
            raise DataError(
                f"no {name} corpus embeddings are cached yet (model hash "
                f"{encoder.model_hash}); encode some first or pass --teacher-docs all"
            )
    out = root / f"{name}-{encoder.model_hash}-{len(docs)}"
    try:
        if read_index_manifest(out)["count"] == len(docs):
            return out
    except DataError:
        pass
    print(f"building the {name} index: {len(docs)} documents, from the embedding cache")
    build_index(
        encoder,
        docs,
        out,
        factory="Flat",
        cache=cache,
        model_path=str(resolve_model(model)),
        total=len(docs),
        bm25=False,
    )
    return out


class Server:
    """`distilsearch serve` in a subprocess on 127.0.0.1 and a free port."""

    def __init__(self, index: Path, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = log.open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from api.cli import main; main()",
                "serve",
                "--index",
                str(index),
                "--host",
                "127.0.0.1",
                "--port",
                "0",
            ],
            env={**os.environ, **env},
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        self.url = self._wait_for_url()

    def _wait_for_url(self) -> str:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited; see {self.log}:\n{self.log.read_text()}")
            found = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", self.log.read_text())
            if found:
                url = found.group(1)
                if httpx.get(url + "/ready", timeout=10).status_code == 200:
                    return url
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server was not ready after {READY_TIMEOUT_S} s; see {self.log}")

    def rss_mb(self) -> float:
        return psutil.Process(self.proc.pid).memory_info().rss / 2**20

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far, all threads."""
        times = psutil.Process(self.proc.pid).cpu_times()
        return float(times.user + times.system)

    def wait_idle(self, max_s: float = 30.0, busy: float = 0.1) -> None:
        """Wait until the server uses under `busy` of a core over 0.5 s (a failed level
        can leave it working through a queue), at most `max_s`."""
        deadline = time.monotonic() + max_s
        while time.monotonic() < deadline:
            before = self.cpu_seconds()
            time.sleep(0.5)
            if self.cpu_seconds() - before < busy * 0.5:
                return

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
        self._out.close()


@dataclass(frozen=True)
class Endpoint:
    """A POST route to load: the bodies sent (cycled) and what a good answer holds.

    Attributes:
        path: The route, e.g. ``/search``.
        bodies: JSON bodies, sent in turn.
        good: Whether a 200's JSON answer is complete.
        texts: Texts the server encodes per request.
    """

    path: str
    bodies: list[dict[str, Any]]
    good: Callable[[dict[str, Any]], bool]
    texts: int = 1


def search_endpoint(queries: list[str]) -> Endpoint:
    """``POST /search`` of each query, k=10 (dense where the index has no BM25)."""
    bodies = [{"query": q, "k": K} for q in queries]
    return Endpoint("/search", bodies, lambda answer: len(answer["hits"]) == K)


def embeddings_endpoint(texts: list[str], model: str, per_request: int) -> Endpoint:
    """``POST /v1/embeddings`` of `per_request` texts at a time, as OpenAI's client sends."""
    batches = [texts[i : i + per_request] for i in range(0, len(texts), per_request)]
    bodies = [{"input": b, "model": model} for b in batches if len(b) == per_request]

    def good(answer: dict[str, Any]) -> bool:
        return len(answer["data"]) == per_request and answer["usage"]["prompt_tokens"] > 0

    return Endpoint("/v1/embeddings", bodies, good, texts=per_request)


async def _drive_httpx(
    url: str, endpoint: Endpoint, clients: int, requests: int, max_s: float
) -> tuple[list[float], int, float]:
    """Send `requests` bodies of `endpoint` from `clients` concurrent httpx clients (stop
    at `max_s`).

    Returns:
        (latencies in ms of the successful requests, errors, wall seconds).
    """
    latencies: list[float] = []
    errors = 0
    sent = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=300) as client:
        t0 = time.perf_counter()
        deadline = t0 + max_s

        async def worker() -> None:
            nonlocal sent, errors
            while sent < requests and time.perf_counter() < deadline:
                body = endpoint.bodies[sent % len(endpoint.bodies)]
                sent += 1
                start = time.perf_counter()
                try:
                    r = await client.post(endpoint.path, json=body)
                    ok = r.status_code == 200 and endpoint.good(r.json())
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(1000 * (time.perf_counter() - start))
                else:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(clients)))
        return latencies, errors, time.perf_counter() - t0


def _drive_wrk(
    url: str, bodies: Path, clients: int, requests: int, max_s: float
) -> tuple[list[float], int, float]:
    """The same as `_drive_httpx`, with wrk (C, one thread) sending the requests.

    wrk reports latency quantiles, not each request's latency; the returned list
    holds one value per good response, read off those quantiles (0.1 % steps), so
    that rounds pool as raw samples would.
    """
    cmd = [
        WRK,
        "-t1",
        f"-c{clients}",
        f"-d{max(1, int(max_s))}s",
        f"--timeout={max(10, int(max_s))}s",
        "-s",
        str(WRK_SCRIPT),
        url,
        "--",
        str(bodies),
        str(requests),
        str(K),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=max_s + 60)
    line = next((x for x in out.stdout.splitlines() if x.startswith("WRK ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result (exit {out.returncode}): {out.stderr[-500:]}")
    got = json.loads(line[4:])
    levels = np.arange(1, 1001) / 10
    quantiles_ms = np.asarray(got["quantiles_us"], dtype=float) / 1000
    latencies = np.interp(np.linspace(0.1, 100, got["good"]), levels, quantiles_ms)
    errors = got["bad"] + got["socket_errors"]
    return latencies.tolist(), errors, got["seconds"]


Drive = Callable[[str, int, int, float], tuple[list[float], int, float]]
"""(url, clients, requests, max seconds) -> (latencies ms, errors, wall seconds)."""


def measure(
    server: str,
    url: str,
    drive: Drive,
    clients: int,
    requests: int,
    max_s: float,
    rounds: int = 1,
    others: list[tuple[str, str]] | None = None,
    drives: dict[str, Drive] | None = None,
) -> list[Level]:
    """Measure `url` (and `others`, as (name, url)) at `clients` concurrent clients.

    With several servers (or routes), each level runs in `rounds` short rounds that
    alternate between them, so load from other processes on the machine falls on all
    of them alike and their ratio stays fair. `drives` gives a target its own driver
    by name (another route); the others use `drive`.
    """
    targets = [(server, url), *(others or [])]
    lat: dict[str, list[float]] = {name: [] for name, _ in targets}
    errors = dict.fromkeys(lat, 0)
    wall = dict.fromkeys(lat, 0.0)
    for _ in range(rounds):
        for name, target in targets:
            run = (drives or {}).get(name, drive)
            got, bad, seconds = run(target, clients, max(1, requests // rounds), max_s / rounds)
            lat[name] += got
            errors[name] += bad
            wall[name] += seconds
    rows = []
    for name, _ in targets:
        p50, p95, p99 = np.percentile(lat[name], [50, 95, 99]) if lat[name] else (np.nan,) * 3
        n = len(lat[name])
        rows.append(
            Level(name, clients, n + errors[name], errors[name], p50, p95, p99, n / wall[name])
        )
    return rows


def _fmt(r: Level) -> str:
    return (
        f"{r.server:<22} {r.clients:>7} {r.requests:>8} {r.errors:>6} "
        f"{r.p50_ms:>8.1f} {r.p95_ms:>8.1f} {r.p99_ms:>8.1f} {r.qps:>8.1f}"
    )


def _run_async(coro: Any) -> Any:
    """Run `coro` on uvloop when installed (a lighter client), else on asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def open_level(
    server: Server, queries: list[str], rate: float, count: int, drain_s: float
) -> OpenLoopResult:
    """`count` searches at `rate` per second against `server`, open loop."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    requests = [
        http_post(host, int(port), "/search", json.dumps({"query": q, "k": K}).encode())
        for q in queries
    ]

    def good(status: int, body: bytes) -> bool:
        return status == 200 and body.count(b'"id":') == K

    coro = run_open_loop(
        host,
        int(port),
        requests,
        rate,
        count,
        drain_s=drain_s,
        good=good,
        cpu_seconds=server.cpu_seconds,
    )
    result: OpenLoopResult = _run_async(coro)
    return result


def _fmt_open(name: str, r: OpenLoopResult, passed: bool) -> str:
    cpu = r.cpu_ms_per_request
    return (
        f"{name:<22} {r.rate:>8.1f} {r.sent:>6} {r.errors:>6} {r.p50_ms:>8.1f} {r.p99_ms:>8.1f} "
        f"{r.lag_p99_ms:>8.1f} {r.achieved:>8.1f} {'-' if cpu is None else f'{cpu:.2f}':>8} "
        f"{'pass' if passed else 'FAIL':>5}"
    )


def capacity(
    servers: dict[str, Server], queries: list[str], args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """The capacity at p99 <= ``args.p99_ms`` of each server, searched in alternating
    levels (see `CapacitySearch`), each bounded by ``args.level_seconds`` and
    ``args.level_requests``.

    Returns:
        Per server: ``rate`` (requests/s; 0 when even ``args.capacity_floor`` failed),
        ``cpu_ms_per_request`` at that rate (else at the lowest rate tried), ``bounded``
        (True when the ceiling passed) and every level.
    """
    searches = {
        name: CapacitySearch(start=args.capacity_start, precision=args.capacity_precision)
        for name in servers
    }
    levels: dict[str, list[tuple[OpenLoopResult, bool]]] = {name: [] for name in servers}
    print(
        f"\ncapacity at p99 <= {args.p99_ms:g} ms (open loop, fixed arrival times; latency "
        "from the scheduled time; lag = how late the client sent, p99)"
    )
    head = f"{'server':<22} {'req/s':>8} {'sent':>6} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8} "
    print(head + f"{'lag ms':>8} {'done/s':>8} {'CPU ms':>8} {'':>5}", flush=True)
    while True:
        todo = [(name, rate) for name, s in searches.items() if (rate := s.next_rate())]
        if not todo:
            break
        for name, rate in todo:
            count = level_size(
                rate,
                seconds=args.level_seconds,
                min_requests=args.level_min_requests,
                max_requests=args.level_requests,
            )
            result = open_level(servers[name], queries, rate, count, args.drain_seconds)
            passed = result.meets(args.p99_ms)
            searches[name].record(rate, passed)
            levels[name].append((result, passed))
            print(_fmt_open(name, result, passed), flush=True)
            servers[name].wait_idle()
    found = {}
    for name, search in searches.items():
        at = [r for r, ok in levels[name] if ok and r.rate == search.capacity]
        cpu_at = at[0] if at else min((r for r, _ in levels[name]), key=lambda r: r.rate)
        found[name] = {
            "rate": search.capacity,
            "bounded": search.capacity < search.ceiling,
            "cpu_ms_per_request": cpu_at.cpu_ms_per_request,
            "levels": [{**asdict(r), "passed": ok} for r, ok in levels[name]],
        }
    return found


def _server_env(args: argparse.Namespace) -> dict[str, str]:
    """Environment of the servers: offline, and ``--torch-threads`` when given."""
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if args.torch_threads:
        env["DISTILSEARCH_TORCH_THREADS"] = str(args.torch_threads)
    return env


def _httpx_drive(endpoint: Endpoint) -> Drive:
    def drive(
        url: str, clients: int, requests: int, max_s: float
    ) -> tuple[list[float], int, float]:
        return asyncio.run(_drive_httpx(url, endpoint, clients, requests, max_s))

    return drive


def embeddings_scenario(
    args: argparse.Namespace,
    levels: list[int],
    docs: list[tuple[str, str, str]],
    queries: list[str],
) -> dict[str, Any]:
    """``POST /v1/embeddings`` beside ``POST /search`` on one student server: at each
    level of concurrent clients, rounds that alternate between the two routes. Prints
    latency and requests/s of each, texts/s of embeddings and the ratio of the two.

    Returns:
        ``{"levels": [...], "ratios": {clients: embeddings texts/s over search QPS},
        "errors": n}``.
    """
    student = load_encoder(args.student)
    index = _index("student", student, args.student, docs, args.index_cache, cached_only=False)
    del student
    logs = Path(tempfile.mkdtemp(prefix="distilsearch-load-"))
    server = Server(index, _server_env(args), logs / "student.log")
    try:
        model = httpx.get(server.url + "/v1/models", timeout=30).json()["data"][0]["id"]
        embed = embeddings_endpoint(queries, model, args.embed_inputs)
        names = ("/search", f"/v1/embeddings x{args.embed_inputs}")
        drives = {
            names[0]: _httpx_drive(search_endpoint(queries)),
            names[1]: _httpx_drive(embed),
        }
        for name, drive in drives.items():
            measure(name, server.url, drive, 4, WARMUP, args.max_seconds)
        print(
            f"{len(queries)} SciFact test queries on one server ({model}); /v1/embeddings "
            f"embeds {args.embed_inputs} of them per request; load from httpx; "
            f"{args.requests} requests per level and route in {args.rounds} alternating rounds"
        )
        header = f"{'route':<22} {'clients':>7} {'requests':>8} {'errors':>6} "
        print(header + f"{'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'QPS':>8}", flush=True)
        rows: list[Level] = []
        for clients in levels:
            got = measure(
                names[0], server.url, drives[names[0]], clients, args.requests,
                args.max_seconds, args.rounds, [(names[1], server.url)], drives,
            )  # fmt: skip
            for row in got:
                print(_fmt(row), flush=True)
            rows += got
    finally:
        server.stop()
    return _report_embeddings(rows, args)


def _report_embeddings(rows: list[Level], args: argparse.Namespace) -> dict[str, Any]:
    """Print texts/s of embeddings against search QPS per level."""
    ratios: dict[int, float] = {}
    errors = sum(r.errors for r in rows)
    for search, embed in zip(rows[::2], rows[1::2], strict=True):
        texts = embed.qps * args.embed_inputs
        ratios[search.clients] = texts / search.qps if search.qps else float("nan")
        print(
            f"{search.clients:>3} clients: /v1/embeddings {embed.qps:.0f} req/s = {texts:.0f} "
            f"texts/s (p99 {embed.p99_ms:.1f} ms) vs /search {search.qps:.0f} QPS "
            f"(p99 {search.p99_ms:.1f} ms): {ratios[search.clients]:.2f}x"
        )
    print(f"errors: {errors}")
    return {"levels": [asdict(r) for r in rows], "ratios": ratios, "errors": errors}


def student_teacher(
    args: argparse.Namespace,
    levels: list[int],
    docs: list[tuple[str, str, str]],
    queries: list[str],
) -> dict[str, Any]:
    """The student, the student without micro-batching and the teacher, each a server:
    closed-loop levels, then the capacity search, then the student's RSS over more
    requests. Prints each level as it is measured and the ratios at the end.

    Returns:
        ``levels`` (every server and level), ``rss``, ``capacity`` (per server, see
        `capacity`), ``capacity_ratio``, ``qps_ratio_N`` and ``batching_gain_N`` per
        level of N clients, and ``errors``.
    """
    env = _server_env(args)
    student = load_encoder(args.student)
    s_index = _index("student", student, args.student, docs, args.index_cache, cached_only=False)
    teacher = load_encoder(args.teacher, backend="torch")
    t_index = _index(
        "teacher", teacher, args.teacher, docs, args.index_cache,
        cached_only=args.teacher_docs == "cached",
    )  # fmt: skip
    del student, teacher
    logs = Path(tempfile.mkdtemp(prefix="distilsearch-load-"))
    search = search_endpoint(queries)
    drive: Drive
    if args.client == "wrk":
        bodies = logs / "bodies.jsonl"
        bodies.write_text("".join(json.dumps({"query": q, "k": K}) + "\n" for q in queries))

        def drive(
            url: str, clients: int, requests: int, max_s: float
        ) -> tuple[list[float], int, float]:
            return _drive_wrk(url, bodies, clients, requests, max_s)
    else:

        def drive(
            url: str, clients: int, requests: int, max_s: float
        ) -> tuple[list[float], int, float]:
            return asyncio.run(_drive_httpx(url, search, clients, requests, max_s))

    s_name = f"student ({read_index_manifest(s_index)['count']} docs)"
    t_name = f"teacher ({read_index_manifest(t_index)['count']} docs)"
    o_name = "student, no batching"
    servers: dict[str, Server] = {}
    try:
        servers[s_name] = Server(s_index, env, logs / "student.log")
        servers[o_name] = Server(
            s_index, {**env, "DISTILSEARCH_BATCH_MAX_SIZE": "1"}, logs / "nobatch.log"
        )
        servers[t_name] = Server(
            t_index, {**env, "DISTILSEARCH_BACKEND": "torch"}, logs / "teacher.log"
        )
        for name, server in servers.items():
            measure(name, server.url, drive, 4, WARMUP, args.max_seconds)
        print(
            f"{len(queries)} SciFact test queries, k=10, dense; {os.cpu_count()} CPUs; "
            f"load from {args.client}; "
            f"{args.requests} requests per level and server in {args.rounds} alternating "
            f"rounds (at most {args.max_seconds:g} s); logs in {logs}"
        )
        header = f"{'server':<22} {'clients':>7} {'requests':>8} {'errors':>6} "
        print(header + f"{'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'QPS':>8}", flush=True)
        s_rows, o_rows, t_rows = [], [], []
        for clients in levels:
            others = [(t_name, servers[t_name].url)]
            if clients > 1:
                others.append((o_name, servers[o_name].url))
            rows = measure(
                s_name,
                servers[s_name].url,
                drive,
                clients,
                args.requests,
                args.max_seconds,
                args.rounds,
                others,
            )
            for row in rows:
                print(_fmt(row), flush=True)
            s_rows.append(rows[0])
            t_rows.append(rows[1])
            o_rows += rows[2:]
        found: dict[str, dict[str, Any]] = {}
        if args.capacity:
            found = capacity({n: servers[n] for n in (s_name, t_name)}, queries, args)
        rss: dict[str, float] = {}
        if args.rss_requests:
            served = servers[s_name]
            rss["before_mb"] = served.rss_mb()
            (row,) = measure(s_name, served.url, drive, 16, args.rss_requests, args.rss_seconds)
            rss.update(after_mb=served.rss_mb(), requests=row.requests, errors=row.errors)
            rss["qps"] = row.qps
    finally:
        for server in servers.values():
            server.stop()
    dumped = [asdict(r) for r in (*s_rows, *o_rows, *t_rows)]
    summary: dict[str, Any] = {"levels": dumped, "rss": rss, "capacity": found}
    print()
    for name, got in found.items():
        cpu = got["cpu_ms_per_request"]
        print(
            f"capacity at p99 <= {args.p99_ms:g} ms: {name} {got['rate']:.1f} req/s"
            f"{'' if got['bounded'] else ' or more'}, "
            f"{'-' if cpu is None else f'{cpu:.2f}'} ms CPU per request"
        )
    if len(found) == 2 and found[t_name]["rate"] > 0:
        ratio = found[s_name]["rate"] / found[t_name]["rate"]
        summary["capacity_ratio"] = ratio
        print(f"capacity student/teacher: {ratio:.1f}x")
    if rss:
        print(
            f"student RSS: {rss['before_mb']:.0f} MB before, {rss['after_mb']:.0f} MB after "
            f"{rss['requests']} requests ({rss['errors']} errors, {rss['qps']:.0f} QPS)"
        )
    for s, t in zip(s_rows, t_rows, strict=True):
        ratio = s.qps / t.qps
        summary[f"qps_ratio_{s.clients}"] = ratio
        print(f"{s.clients:>3} clients: student/teacher QPS {ratio:5.1f}x, p99 {s.p99_ms:.1f} ms")
    for o in o_rows:
        b = next(s for s in s_rows if s.clients == o.clients)
        summary[f"batching_gain_{o.clients}"] = b.qps / o.qps
        print(
            f"{o.clients:>3} clients: micro-batching {b.qps:.0f} QPS vs one at a time "
            f"{o.qps:.0f} QPS ({b.qps / o.qps:.1f}x); p99 {b.p99_ms:.1f} vs {o.p99_ms:.1f} ms"
        )
    total_errors = sum(r.errors for r in (*s_rows, *o_rows, *t_rows)) + int(rss.get("errors", 0))
    summary["errors"] = total_errors
    print(f"errors: {total_errors}")
    return summary


def _levels_table(levels: list[dict[str, Any]]) -> str:
    """Markdown: one row per server (or route) and level of clients."""
    lines = [
        "| server | clients | requests | errors | p50 ms | p95 ms | p99 ms | QPS |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in levels:
        lines.append(
            f"| {r['server']} | {r['clients']} | {r['requests']} | {r['errors']} | "
            f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['qps']:.1f} |"
        )
    return "\n".join(lines)


def _capacity_table(found: dict[str, dict[str, Any]], p99_ms: float) -> str:
    """Markdown: each server's capacity at the bound, its p99 there and CPU per request."""
    lines = [
        f"| server | capacity at p99 <= {p99_ms:g} ms, req/s | p99 at that rate, ms "
        "| CPU ms / request | levels (req/s: p99 ms, pass) |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for name, got in found.items():
        at = [lv for lv in got["levels"] if lv["passed"] and lv["rate"] == got["rate"]]
        rate = f"{got['rate']:.1f}{'' if got['bounded'] else ' or more'}" if at else "none"
        p99 = f"{at[0]['p99_ms']:.1f}" if at else "-"
        cpu_ms = got["cpu_ms_per_request"]
        cpu = "-" if cpu_ms is None else f"{cpu_ms:.2f}"
        if cpu_ms is not None and not at:  # `capacity` took it at the lowest rate tried
            cpu += f" (at {min(lv['rate'] for lv in got['levels']):g} req/s)"
        tried = ", ".join(
            f"{lv['rate']:g}: {lv['p99_ms']:.1f}{'' if lv['passed'] else ' FAIL'}"
            for lv in got["levels"]
        )
        lines.append(f"| {name} | {rate} | {p99} | {cpu} | {tried} |")
    return "\n".join(lines)


def render(summary: dict[str, Any], settings: dict[str, Any]) -> str:
    """The Markdown tables of one run of either scenario, without its heading."""
    parts = [_levels_table(summary["levels"])]
    names = {"qps_ratio": "student / teacher QPS", "batching_gain": "micro-batching gain"}
    ratios = [
        f"- {names[key.rpartition('_')[0]]}, {key.rpartition('_')[2]} clients: {value:.2f}x"
        for key, value in summary.items()
        if key.startswith(("qps_ratio_", "batching_gain_"))
    ]
    if "capacity_ratio" in summary:
        ratios.append(f"- capacity student / teacher: {summary['capacity_ratio']:.2f}x")
    ratios += [
        f"- /v1/embeddings texts/s over /search QPS, {c} clients: {v:.2f}x"
        for c, v in summary.get("ratios", {}).items()
    ]
    if summary.get("capacity"):
        parts.append(_capacity_table(summary["capacity"], settings["p99_ms"]))
    rss = summary.get("rss")
    if rss:
        ratios.append(
            f"- student RSS {rss['before_mb']:.0f} MB before, {rss['after_mb']:.0f} MB after "
            f"{rss['requests']} more requests ({rss['errors']} errors, {rss['qps']:.0f} QPS)"
        )
    ratios.append(f"- errors: {summary['errors']}")
    return "\n\n".join([*parts, "\n".join(ratios)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", default="all-MiniLM-L6-v2", help="model name or folder")
    parser.add_argument("--teacher", default="all-mpnet-base-v2")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--requests", type=int, default=400, help="requests per level")
    parser.add_argument("--levels", default="1,8,16,32", help="concurrent clients")
    parser.add_argument(
        "--max-seconds", type=float, default=60.0, help="time cap per level and server"
    )
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds per level")
    parser.add_argument("--rss-seconds", type=float, default=900.0, help="time cap of the RSS run")
    parser.add_argument("--rss-requests", type=int, default=10_000)
    parser.add_argument(
        "--teacher-docs", default="cached", help="cached: only cached embeddings; all"
    )
    parser.add_argument("--torch-threads", type=int, default=None)
    parser.add_argument(
        "--client",
        choices=["wrk", "httpx"],
        default="wrk" if shutil.which("wrk") else "httpx",
        help="load generator: wrk (C, light; apt-get install wrk) or httpx (Python)",
    )
    parser.add_argument(
        "--capacity",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="search the open-loop capacity of student and teacher at --p99-ms",
    )
    parser.add_argument("--p99-ms", type=float, default=25.0, help="capacity: latency bound")
    parser.add_argument(
        "--level-seconds", type=float, default=10.0, help="capacity: seconds of load per level"
    )
    parser.add_argument("--level-requests", type=int, default=3000, help="capacity: most per level")
    parser.add_argument(
        "--level-min-requests", type=int, default=200, help="capacity: fewest per level (p99)"
    )
    parser.add_argument("--drain-seconds", type=float, default=5.0, help="capacity: answer wait")
    parser.add_argument("--capacity-start", type=float, default=8.0, help="first rate, req/s")
    parser.add_argument(
        "--capacity-precision", type=float, default=0.1, help="stop at this relative gap"
    )
    parser.add_argument(
        "--scenario",
        choices=["student-teacher", "embeddings"],
        default="student-teacher",
        help="student-teacher: the comparison above; embeddings: POST /v1/embeddings "
        "beside POST /search on one student server (httpx client, no capacity search)",
    )
    parser.add_argument(
        "--embed-inputs", type=int, default=1, help="embeddings: texts per /v1/embeddings request"
    )
    parser.add_argument(
        "--index-cache",
        type=Path,
        default=cache_dir() / "bench",
        help="where the servers' index folders are built and kept between runs",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results folder: results.json (with provenance) and table.md "
        "(default bench/out/load, or bench/out/load-embeddings)",
    )
    args = parser.parse_args()
    prov = Provenance()
    out = args.out or OUT / ("load-embeddings" if args.scenario == "embeddings" else "load")

    levels = [int(x) for x in args.levels.split(",") if x.strip()]  # "": no closed loop
    docs, queries = _docs(args.data)
    if args.scenario == "embeddings":
        summary = embeddings_scenario(args, levels, docs, queries)
    else:
        summary = student_teacher(args, levels, docs, queries)
    settings = {
        "scenario": args.scenario,
        "student": args.student,
        "teacher": args.teacher if args.scenario == "student-teacher" else None,
        "data": str(args.data),
        "queries": len(queries),
        "client": "httpx" if args.scenario == "embeddings" else args.client,
        "levels": levels,
        "requests": args.requests,
        "rounds": args.rounds,
        "p99_ms": args.p99_ms,
        "cpus": os.cpu_count(),
    }
    record = prov.finish()
    write(out, "results.json", {"provenance": record, "settings": settings, **summary})
    heading = (
        f"`bench/load.py` ({args.scenario}); `{record['command']}`; commit {record['commit']}, "
        f"{record['date']}; machine {'idle' if record['idle'] else 'NOT idle'} "
        f"(others' CPU share {record['others_cpu_share']})"
    )
    (out / "table.md").write_text(heading + "\n\n" + render(summary, settings) + "\n")
    print(f"wrote {out}/results.json, table.md")


if __name__ == "__main__":
    main()
