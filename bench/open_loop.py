"""Open-loop HTTP load and the capacity search that `bench/load.py` runs on it.

An open-loop generator sends request i at ``t0 + i / rate`` whether or not earlier
ones were answered, as independent users would; a closed loop (N clients, each
waiting for its answer) slows down with the server and hides its queueing. Latency is
counted from each request's *scheduled* time, so a late send (the client falling
behind) is charged too rather than silently dropped. The client is a bare HTTP/1.1
keep-alive client on asyncio streams, much lighter than httpx, because on a small
machine it shares the cores with the server under test.

`CapacitySearch` finds the highest rate that meets a latency bound: doubling from a
start rate until a level fails, then bisection (geometric) between the highest rate
that passed and the lowest that failed, each level bounded in requests and seconds by
the caller.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["CapacitySearch", "OpenLoopResult", "http_post", "level_size", "run_open_loop"]


@dataclass(frozen=True)
class OpenLoopResult:
    """One open-loop level.

    Attributes:
        rate: Requested rate, requests/s.
        sent: Requests scheduled (all of them are sent, late or not).
        ok: Requests answered with a good response.
        errors: Bad responses, broken connections and requests unanswered at the
            level's deadline.
        p50_ms: Median latency of good responses, from scheduled time to last byte.
        p99_ms: 99th percentile of the same (nan when none were good).
        lag_p99_ms: 99th percentile of how late requests were sent after their
            scheduled time: large values mean the client, not the server, fell behind.
        seconds: First scheduled send to last response.
        cpu_ms_per_request: Server CPU time over the level per good response (None
            when no CPU clock was given).
    """

    rate: float
    sent: int
    ok: int
    errors: int
    p50_ms: float
    p99_ms: float
    lag_p99_ms: float
    seconds: float
    cpu_ms_per_request: float | None

    @property
    def achieved(self) -> float:
        """Good responses per second."""
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def meets(self, p99_ms: float) -> bool:
        """No errors, and p99 latency at most `p99_ms`."""
        return self.errors == 0 and self.ok > 0 and self.p99_ms <= p99_ms


def level_size(rate: float, *, seconds: float, min_requests: int, max_requests: int) -> int:
    """Requests in a level at `rate`: about `seconds` worth, at least `min_requests`
    (for a meaningful p99) unless that takes over 3 × `seconds`, at most `max_requests`."""
    want = max(round(rate * seconds), min_requests)
    return max(1, min(want, max_requests, math.ceil(rate * 3 * seconds)))


class _Connections:
    """Keep-alive connections to one server: idle ones are reused, new ones opened up to
    a limit; a request that finds none free waits (its latency still counts)."""

    def __init__(self, host: str, port: int, limit: int) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened = 0
        self.limit = limit
        self.freed = asyncio.Condition()

    async def take(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with self.freed:
            while not self.idle and self.opened >= self.limit:
                await self.freed.wait()
            if self.idle:
                return self.idle.pop()
            self.opened += 1
        try:
            return await asyncio.open_connection(self.host, self.port)
        except OSError:
            await self.drop()
            raise

    async def give_back(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        async with self.freed:
            self.idle.append(conn)
            self.freed.notify()

    async def drop(
        self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    ) -> None:
        if conn is not None:
            conn[1].close()
        async with self.freed:
            self.opened -= 1
            self.freed.notify()

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


async def _exchange(
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], request: bytes
) -> tuple[int, bytes]:
    """Send one HTTP/1.1 request; return (status, body). Needs a Content-Length reply."""
    reader, writer = conn
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = next(
        (int(x.split(b":", 1)[1]) for x in lines[1:] if x.lower().startswith(b"content-length:")),
        None,
    )
    if length is None:
        raise ConnectionError("the response has no Content-Length")
    return status, await reader.readexactly(length)


def http_post(host: str, port: int, path: str, body: bytes) -> bytes:
    """The bytes of a keep-alive JSON POST request."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def run_open_loop(
    host: str,
    port: int,
    requests: Sequence[bytes],
    rate: float,
    count: int,
    *,
    drain_s: float = 5.0,
    max_connections: int = 256,
    good: Callable[[int, bytes], bool] = lambda status, _body: status == 200,
    cpu_seconds: Callable[[], float] | None = None,
) -> OpenLoopResult:
    """Send `count` requests at fixed times ``i / rate`` and measure them.

    Args:
        host: Server address (e.g. 127.0.0.1).
        port: Server port.
        requests: Raw HTTP requests (`http_post`), cycled through.
        rate: Requests per second, > 0.
        count: Requests to send.
        drain_s: How long after the last scheduled send answers are awaited; those
            still missing count as errors.
        max_connections: Most connections open at once.
        good: Whether a (status, body) response counts as good.
        cpu_seconds: The server's CPU clock (user + system seconds), read before and
            after the level, for ``cpu_ms_per_request``.
    """
    if rate <= 0 or count < 1 or not requests:
        raise ValueError(f"need rate > 0, count >= 1 and requests; got {rate}, {count}")
    pool = _Connections(host, port, max_connections)
    latency: list[float] = []
    lag: list[float] = []
    errors = 0
    last = 0.0

    async def one(i: int, due: float) -> None:
        nonlocal errors, last
        lag.append(time.perf_counter() - due)
        try:
            conn = await pool.take()
        except OSError:
            errors += 1
            return
        try:
            status, body = await _exchange(conn, requests[i % len(requests)])
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            errors += 1
            await pool.drop(conn)
            return
        except asyncio.CancelledError:
            await pool.drop(conn)
            raise
        await pool.give_back(conn)
        done = time.perf_counter()
        last = max(last, done)
        if good(status, body):
            latency.append(done - due)
        else:
            errors += 1

    cpu0 = cpu_seconds() if cpu_seconds else 0.0
    tasks = []
    t0 = time.perf_counter()
    for i in range(count):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(i, due)))
    deadline = t0 + count / rate + drain_s
    _, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.perf_counter()))
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    cpu = (cpu_seconds() - cpu0) if cpu_seconds else None
    pool.close()
    errors += len(pending)
    ms = np.asarray(latency) * 1000
    p50, p99 = (float(x) for x in np.percentile(ms, [50, 99])) if len(ms) else (math.nan,) * 2
    return OpenLoopResult(
        rate=rate,
        sent=count,
        ok=len(latency),
        errors=errors,
        p50_ms=p50,
        p99_ms=p99,
        lag_p99_ms=float(np.percentile(np.asarray(lag) * 1000, 99)) if lag else math.nan,
        seconds=max((last or time.perf_counter()) - t0, 1e-9),
        cpu_ms_per_request=None if cpu is None else 1000 * cpu / max(len(latency), 1),
    )


@dataclass
class CapacitySearch:
    """The highest request rate that passes, by doubling then bisection.

    Call `next_rate`, measure that rate, `record` whether it passed; repeat until
    `next_rate` returns None. Assumes passing is monotone in the rate (noise near the
    capacity makes the answer uncertain by about the run-to-run variation).

    Attributes:
        start: First rate tried, requests/s.
        floor: Below this, give up: the capacity is reported as 0.
        ceiling: Above this, stop doubling: the capacity is at least `ceiling`.
        precision: Stop when the lowest failing rate is within this fraction above
            the highest passing one.
        max_levels: Most levels measured.
    """

    start: float = 8.0
    floor: float = 0.5
    ceiling: float = 4096.0
    precision: float = 0.1
    max_levels: int = 16
    passed: float | None = None
    failed: float | None = None
    levels: int = 0

    def next_rate(self) -> float | None:
        """The next rate to measure, or None when done."""
        if self.levels >= self.max_levels:
            return None
        low, high = self.passed, self.failed
        if low is None and high is None:
            return self.start
        if high is None:  # nothing failed yet: double
            top = low or self.start
            return None if top >= self.ceiling else min(2 * top, self.ceiling)
        if low is None:  # nothing passed yet: halve
            return None if high <= self.floor else max(high / 2, self.floor)
        if high <= low * (1 + self.precision):
            return None
        return math.sqrt(low * high)

    def record(self, rate: float, ok: bool) -> None:
        """Note the outcome of a level at `rate`."""
        self.levels += 1
        if ok:
            self.passed = rate if self.passed is None else max(self.passed, rate)
        else:
            self.failed = rate if self.failed is None else min(self.failed, rate)

    @property
    def capacity(self) -> float:
        """The highest rate that passed (0 when none did)."""
        return self.passed or 0.0
