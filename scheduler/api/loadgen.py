"""Load generator for the API: N concurrent clients submit jobs; rate and latency.

Meant for `trainpool bench api` (wired by the bench command's owner) and for the
service tests. Every submission carries a client request id, so a retried request can
never make a second job.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class LoadResult:
    submitted: int
    errors: int
    seconds: float
    latencies: list[float] = field(repr=False, default_factory=list)
    first_errors: list[str] = field(default_factory=list)
    retries: int = 0

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
        }


def _spec(i: int, org: str, flavor: str) -> dict[str, Any]:
    return {
        "name": f"bench-{i}",
        "org": org,
        "gang": {"flavor": flavor, "replicas": 1, "accelerators": 1},
        "env": {"SIM_DURATION": "1"},
    }


async def _client(
    http: httpx.AsyncClient, queue: asyncio.Queue[int], result: LoadResult, org: str, flavor: str, run: str
) -> None:
    while True:
        try:
            i = queue.get_nowait()
        except asyncio.QueueEmpty:
            return
        body = {"spec": _spec(i, org, flavor), "client_request_id": f"{run}-{i}"}
        started = time.perf_counter()
        ok, problem = False, ""
        for _ in range(2):
            try:
                resp = await http.post("/v1/jobs", json=body)
                ok = resp.status_code in (200, 201)
                problem = "" if ok else f"HTTP {resp.status_code}: {resp.text[:200]}"
                break
            except httpx.TransportError as exc:
                # A kept-alive connection closed under us: the same request id makes the
                # retry safe (no second job); counted, so the figure stays honest.
                result.retries += 1
                problem = f"{type(exc).__name__}: {exc}"
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                break
        result.latencies.append(time.perf_counter() - started)
        if ok:
            result.submitted += 1
        else:
            result.errors += 1
            result.first_errors.append(problem)


async def _run(url: str, token: str, jobs: int, clients: int, org: str, flavor: str) -> LoadResult:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(jobs):
        queue.put_nowait(i)
    result = LoadResult(0, 0, 0.0)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {token}"}
    run = f"bench-{int(time.time() * 1000)}"
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60.0) as http:
        started = time.perf_counter()
        await asyncio.gather(*(_client(http, queue, result, org, flavor, run) for _ in range(clients)))
        result.seconds = time.perf_counter() - started
    return result


def run_load(
    url: str, token: str, *, jobs: int = 10_000, clients: int = 50, org: str, flavor: str
) -> LoadResult:
    return asyncio.run(_run(url.rstrip("/"), token, jobs, clients, org, flavor))
