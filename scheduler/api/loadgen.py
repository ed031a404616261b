"""Load generator for the API: N concurrent clients submit jobs; rate and latency.

Meant for `trainpool bench api` (wired by the bench command's owner) and for the
service tests. Every submission carries a client request id, so a retried request can
never make a second job.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from scheduler.server_process import cycle_histogram, scrape, window_p99


@dataclass
class LoadResult:
    submitted: int
    errors: int
    seconds: float
    latencies: list[float] = field(repr=False, default_factory=list)
    first_errors: list[str] = field(default_factory=list)
    retries: int = 0
    # The server's control-loop cycles while the load ran (from its /metrics histogram).
    cycles: int = 0
    cycle_mean_ms: float = 0.0
    cycle_p99_ms: float = 0.0  # the upper bound of the histogram bucket holding the 99th percentile

    @property
    def rate(self) -> float:
        return self.submitted / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    def summary(self) -> dict[str, Any]:
        return {
            "submitted": self.submitted,
            "errors": self.errors,
            "retries": self.retries,
            "seconds": round(self.seconds, 3),
            "submissions_per_second": round(self.rate, 1),
            "p50_ms": round(self.percentile(50) * 1000, 1),
            "p99_ms": round(self.percentile(99) * 1000, 1),
            "mean_ms": round(statistics.fmean(self.latencies) * 1000, 1) if self.latencies else 0.0,
            "first_errors": self.first_errors[:5],
            "cycles": self.cycles,
            "cycle_mean_ms": round(self.cycle_mean_ms, 1),
            "cycle_p99_ms": round(self.cycle_p99_ms, 1),
        }


def _spec(i: int, org: str, flavor: str) -> dict[str, Any]:
    return {
        "name": f"bench-{i}",
        "org": org,
        "gang": {"flavor": flavor, "replicas": 1, "accelerators": 1},
        "env": {"SIM_DURATION": "1"},
    }


class Connection:
    """One kept-alive HTTP/1.1 connection on bare asyncio streams.

    A general client (httpx) spends several times the CPU the server does per
    request; on a 2-core machine that would measure the client. This one writes a
    fixed request shape and reads Content-Length bodies, nothing more.
    """

    def __init__(self, host: str, port: int, token: str) -> None:
        self.host, self.port = host, port
        self.head = f"POST /v1/jobs HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        request = f"{self.head}Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        self.writer.write(request.encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
            self.reader = self.writer = None


async def _client(
    conn: Connection, queue: asyncio.Queue[int], result: LoadResult, org: str, flavor: str, run: str
) -> None:
    while True:
        try:
            i = queue.get_nowait()
        except asyncio.QueueEmpty:
            await conn.close()
            return
        body = json.dumps({"spec": _spec(i, org, flavor), "client_request_id": f"{run}-{i}"}).encode()
        started = time.perf_counter()
        ok, problem = False, ""
        for _ in range(2):
            try:
                status, answer = await conn.post(body)
                ok = status in (200, 201)
                problem = "" if ok else f"HTTP {status}: {answer[:200]!r}"
                break
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                # A kept-alive connection closed under us: the same request id makes the
                # retry safe (no second job); counted, so the figure stays honest.
                await conn.close()
                result.retries += 1
                problem = f"{type(exc).__name__}: {exc}"
        result.latencies.append(time.perf_counter() - started)
        if ok:
            result.submitted += 1
        else:
            result.errors += 1
            result.first_errors.append(problem)


async def _run(url: str, token: str, jobs: int, clients: int, org: str, flavor: str) -> LoadResult:
    parsed = urlsplit(url)
    if parsed.scheme != "http" or not parsed.hostname:
        raise ValueError(f"url: the load generator speaks plain http://host:port, not '{url}'")
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(jobs):
        queue.put_nowait(i)
    result = LoadResult(0, 0, 0.0)
    run = f"bench-{int(time.time() * 1000)}"
    conns = [Connection(parsed.hostname, parsed.port or 80, token) for _ in range(clients)]
    started = time.perf_counter()
    await asyncio.gather(*(_client(c, queue, result, org, flavor, run) for c in conns))
    result.seconds = time.perf_counter() - started
    return result


def run_load(
    url: str, token: str, *, jobs: int = 10_000, clients: int = 50, org: str, flavor: str
) -> LoadResult:
    """Submit ``jobs`` jobs from ``clients`` concurrent connections; what it measured."""
    return asyncio.run(_run(url.rstrip("/"), token, jobs, clients, org, flavor))


BENCH_POOL = """
name: bench
flavors: [{name: h100}]
node_groups: [{flavor: h100, count: 16, accelerators: 8, racks_per_spine: 2, name_prefix: h100}]
orgs: [{name: bench, quotas: {h100: {nominal: 128}}}]
"""


def bench_new_server(
    db: str | None, *, jobs: int = 10_000, clients: int = 50, workdir: str | None = None
) -> LoadResult:
    """Start `trainpool server` (sim backend, control loop on) on a fresh database, load it, stop it.

    ``db``: a PostgreSQL URL (its tables are used as they are: give an empty database),
    or None for a new SQLite file in ``workdir``. For `trainpool bench api`.
    """
    import secrets
    import tempfile
    from pathlib import Path

    from scheduler.server_process import ServerProcess

    work = Path(workdir or tempfile.mkdtemp(prefix="trainpool-bench-api-"))
    (work / "pool.yaml").write_text(BENCH_POOL)
    token = "tp_" + secrets.token_urlsafe(24)
    args = ["--db", db or str(work / "bench.db"), "--pool", str(work / "pool.yaml"), "--sim-duration", "1"]
    env = {"TRAINPOOL_ADMIN_TOKEN": token, "XDG_DATA_HOME": str(work)}
    with ServerProcess(args, work, env) as server:
        url = server.url
        before = cycle_histogram(scrape(url, token))
        result = run_load(url, token, jobs=jobs, clients=clients, org="bench", flavor="h100")
        after = cycle_histogram(scrape(url, token))
        result.cycles = int(after[2] - before[2])
        if result.cycles:
            result.cycle_mean_ms = (after[1] - before[1]) / result.cycles * 1000
            result.cycle_p99_ms = window_p99(before[0], after[0]) * 1000
        return result
