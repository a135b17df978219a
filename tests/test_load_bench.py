"""bench/open_loop.py: the open-loop generator keeps its schedule, and the capacity
search finds the rate a toy server with a known latency model can sustain;
bench/load.py: tiny runs of both scenarios write their results with provenance."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ holds scripts
from bench.open_loop import (
    CapacitySearch,
    OpenLoopResult,
    http_post,
    level_size,
    run_open_loop,
)

BODY = b'{"query": "q", "k": 10}'


class ToyServer:
    """HTTP/1.1 on 127.0.0.1 in a thread, answering ``{}`` with a latency the test sets.

    Each request waits for one FIFO worker that takes `service_s` per request (so
    above ``1 / service_s`` requests/s a queue builds up without bound), then
    `delay_s` more on its own (a latency that does not queue). Times are absolute, so
    timer jitter does not accumulate.
    """

    def __init__(self, *, service_s: float = 0.0, delay_s: float = 0.0) -> None:
        self.service_s, self.delay_s = service_s, delay_s
        self.free_at = 0.0
        self.loop = asyncio.new_event_loop()
        start = asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.server = self.loop.run_until_complete(start)
        self.port = int(self.server.sockets[0].getsockname()[1])
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._answer(reader):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        except asyncio.CancelledError:
            pass  # stop() ends the connections still open
        finally:
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader) -> bool:
        """Read one request and wait out its latency; False when the client left."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(x.split(b":")[1])
                for x in head.split(b"\r\n")
                if x.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError):
            return False
        now = self.loop.time()
        if self.service_s:
            self.free_at = max(now, self.free_at) + self.service_s
            done = self.free_at + self.delay_s
        else:
            done = now + self.delay_s
        await asyncio.sleep(max(0.0, done - self.loop.time()))
        return True

    def stop(self) -> None:
        async def shutdown() -> None:
            self.server.close()
            handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in handlers:
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


Toy = Callable[..., ToyServer]


@pytest.fixture
def toy() -> Iterator[Toy]:
    servers: list[ToyServer] = []

    def make(**latency: float) -> ToyServer:
        servers.append(ToyServer(**latency))
        return servers[-1]

    yield make
    for server in servers:
        server.stop()


def _level(server: ToyServer, rate: float, count: int) -> OpenLoopResult:
    request = http_post("127.0.0.1", server.port, "/search", BODY)
    return asyncio.run(run_open_loop("127.0.0.1", server.port, [request], rate, count))


def test_open_loop_keeps_its_schedule_when_answers_are_slow(toy: Toy) -> None:
    server = toy(delay_s=0.05)  # 50 ms each: one connection in a closed loop does 20/s

    got = _level(server, rate=100, count=50)

    assert got.ok == 50 and got.errors == 0
    assert got.seconds < 0.49 + 0.05 + 0.3, got  # the schedule's 0.49 s plus one answer
    assert got.achieved > 60, got
    assert 50 <= got.p50_ms < 120, got
    assert got.lag_p99_ms < 100, got


def test_latency_counts_from_the_scheduled_time_under_overload(toy: Toy) -> None:
    server = toy(service_s=0.02)  # 50 requests/s at most

    got = _level(server, rate=200, count=40)

    # The last request is scheduled at 0.195 s and served at about 0.8 s.
    assert got.ok == 40 and got.p99_ms > 400, got


def test_capacity_of_a_queueing_toy_server(toy: Toy) -> None:
    server = toy(service_s=0.01)  # a queue builds above 100 requests/s
    search = CapacitySearch(start=16, precision=0.1)
    while (rate := search.next_rate()) is not None:
        count = level_size(rate, seconds=1.0, min_requests=50, max_requests=400)
        search.record(rate, _level(server, rate, count).meets(40.0))

    # Below 100/s latency is 10 ms; above, a 1-s level ends with a queue of
    # (rate - 100) × 10 ms, past 40 ms from about 103/s.
    assert 50 <= search.capacity <= 105, search


def test_capacity_search_doubles_then_bisects() -> None:
    search = CapacitySearch(start=8, precision=0.05)
    tried = []
    while (rate := search.next_rate()) is not None:
        tried.append(rate)
        search.record(rate, rate <= 137)
    assert tried[:6] == [8, 16, 32, 64, 128, 256]
    assert 137 / 1.05 <= search.capacity <= 137 and search.failed is not None
    assert search.failed <= search.capacity * 1.05

    never = CapacitySearch(start=8, floor=1)
    while (rate := never.next_rate()) is not None:
        never.record(rate, False)
    assert never.capacity == 0 and never.failed == 1

    always = CapacitySearch(start=8, ceiling=100)
    while (rate := always.next_rate()) is not None:
        always.record(rate, True)
    assert always.capacity == 100 and always.levels == 5  # 8, 16, 32, 64, 100


def test_cpu_per_request_and_level_size(toy: Toy) -> None:
    server = toy()
    clock = iter([10.0, 10.5])
    request = http_post("127.0.0.1", server.port, "/search", BODY)
    got = asyncio.run(
        run_open_loop("127.0.0.1", server.port, [request], 100, 20, cpu_seconds=lambda: next(clock))
    )
    assert got.ok == 20 and got.cpu_ms_per_request == pytest.approx(500 / 20)

    assert level_size(1000, seconds=10, min_requests=200, max_requests=3000) == 3000
    assert level_size(50, seconds=10, min_requests=200, max_requests=3000) == 500
    assert level_size(10, seconds=10, min_requests=200, max_requests=3000) == 200
    assert level_size(2, seconds=10, min_requests=200, max_requests=3000) == 60


LOAD = Path(__file__).resolve().parents[1] / "bench" / "load.py"


def _run_load(out: Path, *args: str) -> dict[str, Any]:
    """Run `bench/load.py` with `args`, results into `out`; return its ``results.json``
    after checking that it and ``table.md`` record where they came from."""
    cmd = [sys.executable, str(LOAD), *args, "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    got: dict[str, Any] = json.loads((out / "results.json").read_text())
    prov = got["provenance"]
    assert "load.py" in prov["command"] and "--out" in prov["command"]
    assert prov["commit"] and prov["commit"] != "unknown"
    assert dt.datetime.fromisoformat(prov["date"]).tzinfo is not None
    assert isinstance(prov["idle"], bool) and prov["wall_seconds"] > 0
    assert prov["machine"]["cores"] >= 1
    table = (out / "table.md").read_text()
    assert prov["commit"] in table.splitlines()[0] and "| server |" in table
    assert f"wrote {out}/results.json" in done.stdout
    got["stdout"] = done.stdout
    return got


def test_embeddings_scenario_runs_on_a_tiny_setting(
    tiny_model: Path, scifact_slice: Path, tmp_path: Path
) -> None:
    """`bench/load.py --scenario embeddings` end to end on the tiny model and a slice of
    SciFact, a few requests per level: both routes answer every request, and the results
    land in ``--out`` with their provenance."""
    got = _run_load(
        tmp_path / "out",
        "--scenario", "embeddings", "--student", str(tiny_model), "--data", str(scifact_slice),
        "--levels", "1,2", "--requests", "8", "--rounds", "2", "--embed-inputs", "2",
        "--max-seconds", "30", "--index-cache", str(tmp_path / "cache"),
    )  # fmt: skip
    routes = [(r["server"], r["clients"]) for r in got["levels"]]
    assert routes == [
        ("/search", 1), ("/v1/embeddings x2", 1), ("/search", 2), ("/v1/embeddings x2", 2)
    ]  # fmt: skip
    assert got["errors"] == 0 and all(r["requests"] == 8 and r["qps"] > 0 for r in got["levels"])
    assert set(got["ratios"]) == {"1", "2"} and "texts/s" in got["stdout"]
    assert got["settings"]["scenario"] == "embeddings"
    assert list((tmp_path / "cache").iterdir()), "the index is built under --index-cache"


def test_student_teacher_run_writes_its_results_and_provenance(
    tiny_model: Path, scifact_slice: Path, tmp_path: Path
) -> None:
    """The default scenario on a tiny setting (the tiny model as student and as teacher,
    httpx, one round, a capacity search whose bound no level can meet): every level,
    ratio, capacity level and the RSS run are in ``results.json`` and ``table.md``."""
    got = _run_load(
        tmp_path / "out",
        "--student", str(tiny_model), "--teacher", str(tiny_model), "--teacher-docs", "all",
        "--data", str(scifact_slice), "--client", "httpx", "--levels", "1,2",
        "--requests", "6", "--rounds", "1", "--max-seconds", "30", "--rss-requests", "10",
        "--capacity-start", "2", "--p99-ms", "0.001", "--level-seconds", "1",
        "--drain-seconds", "1", "--index-cache", str(tmp_path / "cache"),
    )  # fmt: skip
    servers = [(r["server"].split(" (")[0], r["clients"]) for r in got["levels"]]
    assert sorted(servers) == [
        ("student", 1), ("student", 2), ("student, no batching", 2), ("teacher", 1), ("teacher", 2)
    ]  # fmt: skip
    assert got["errors"] == 0 and all(r["requests"] == 6 for r in got["levels"])
    assert {"qps_ratio_1", "qps_ratio_2", "batching_gain_2"} <= set(got)
    assert got["rss"]["requests"] == 10 and got["rss"]["after_mb"] > 0
    capacity = got["capacity"]
    assert len(capacity) == 2 and all(c["rate"] == 0 for c in capacity.values())
    assert all([lv["rate"] for lv in c["levels"]] == [2, 1, 0.5] for c in capacity.values())
    table = (tmp_path / "out" / "table.md").read_text()
    assert "capacity at p99 <= 0.001 ms" in table and "| none |" in table
    assert got["settings"]["teacher"] == str(tiny_model)
