"""The validation gang's program: ``python -m scheduler.validation_job``.

Rank 0 runs on the node under test, rank 1 on a healthy peer (see
``values.validation``). Rank 0 burns in every device of its node (matrix products,
checked against a float64 reference and against each other: a device that computes
wrong or differently is caught), then probes the agents of healthy nodes the pool names
(``TRAINPOOL_VALIDATE_PINGMESH``: the agents' own UDP echo and TCP probes, for
``..._PINGMESH_SECONDS``; it fails when most peers lose more than ``..._MAX_LOSS``);
then both ranks all-reduce a known tensor over the
network between them (gloo) and check the sum. Exit 0: the node passes; exit 1 with the
reason on stderr: it fails.

Floors (optional, from the pool's ``validation.env``): ``VALIDATE_MIN_GFLOPS``
per device, ``VALIDATE_MIN_GBPS`` for the all-reduce's bus bandwidth. Without
them only correctness is checked: throughput depends on the hardware, which only the
operator knows. ``VALIDATE_BURN_SECONDS`` (default 10) per device.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import timedelta
from typing import Any

MATRIX = 1024
TENSOR_MB = 16
PROBE_INTERVAL = 0.1  # seconds between pingmesh rounds


class Failed(Exception):
    pass


def _float(name: str, default: float | None) -> float | None:
    raw = os.environ.get(name)
    return default if raw in (None, "") else float(raw)


def burn_in(seconds: float, min_gflops: float | None) -> list[dict[str, Any]]:
    import torch

    devices = [f"cuda:{i}" for i in range(torch.cuda.device_count())] or ["cpu"]
    out = []
    for dev in devices:
        g = torch.Generator().manual_seed(7)
        a64 = torch.randn(MATRIX, MATRIX, generator=g, dtype=torch.float64)
        b64 = torch.randn(MATRIX, MATRIX, generator=g, dtype=torch.float64)
        want = a64 @ b64
        a, b = a64.float().to(dev), b64.float().to(dev)
        first = (a @ b).cpu()
        err = float(((first.double() - want).norm() / want.norm()).item())
        if err > 1e-4:
            raise Failed(f"{dev}: matrix product off by {err:.2e} relative (limit 1e-4)")
        n, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds or n == 0:
            c = a @ b
            if dev.startswith("cuda"):
                torch.cuda.synchronize(dev)
            n += 1
            if n % 8 == 0 and not torch.equal(c.cpu(), first):
                raise Failed(f"{dev}: the same matrix product gave a different result on run {n}")
        took = time.perf_counter() - began
        gflops = 2 * MATRIX**3 * n / took / 1e9
        if min_gflops is not None and gflops < min_gflops:
            raise Failed(f"{dev}: {gflops:.1f} GFLOP/s, below the floor of {min_gflops:g}")
        out.append({"device": dev, "products": n, "gflops": round(gflops, 1), "relative_error": err})
    return out


def all_reduce(rank: int, world: int, min_gbps: float | None) -> dict[str, Any]:
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=120))
    try:
        t = torch.full((TENSOR_MB * 1024 * 1024 // 4,), float(rank + 1))
        dist.all_reduce(t)  # warm-up, and the connection
        rounds, began = 5, time.perf_counter()
        for _ in range(rounds):
            t.fill_(float(rank + 1))
            dist.all_reduce(t)
        took = time.perf_counter() - began
        want = world * (world + 1) / 2
        if not bool(torch.all(t == want)):
            raise Failed(f"all-reduce gave {t[0].item()} (and others), not {want}")
        # Bus bandwidth as nccl-tests define it: 2(n-1)/n of the algorithm bandwidth.
        gbps = TENSOR_MB * rounds / 1024 / took * 2 * (world - 1) / world * 8
        if min_gbps is not None and gbps < min_gbps:
            raise Failed(f"all-reduce bus bandwidth {gbps:.2f} Gbit/s, below the floor of {min_gbps:g}")
        return {"world": world, "bus_gbps": round(gbps, 2)}
    finally:
        dist.destroy_process_group()


def pingmesh(targets: str, seconds: float, max_loss: float) -> dict[str, Any]:
    """Probe ``targets`` (``node=address:port,...``) with the agent's prober."""
    import asyncio

    from agents.pingmesh import Peer
    from values.validation import pingmesh_problem

    peers = []
    for item in filter(None, targets.split(",")):
        name, _, where = item.partition("=")
        address, _, port = where.rpartition(":")
        peers.append(Peer(name, address, int(port)))
    results = asyncio.run(_probe(peers, seconds))
    summary = {r.peer: {"sent": r.sent, "lost": r.lost, "rtt_median": r.rtt_median} for r in results}
    problem = pingmesh_problem(((r.peer, r.sent, r.lost) for r in results), max_loss)
    if problem is not None:
        raise Failed(problem)
    return summary


async def _probe(peers: list[Any], seconds: float) -> list[Any]:
    import asyncio

    from agents.pingmesh import Prober

    prober = Prober(timeout=1.0)
    await prober.start()
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            prober.round(peers)
            await asyncio.sleep(PROBE_INTERVAL)
        await asyncio.sleep(prober.timeout + PROBE_INTERVAL)  # the last probes land or expire
        prober.round([])  # expires what is still unanswered as lost
    finally:
        prober.close()
    return prober.stats.drain()


def main() -> int:
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    node = os.environ.get("TRAINPOOL_NODE", "?")
    if rank == 0 and (visibility := os.environ.get("TRAINPOOL_VALIDATE_VISIBILITY")):
        # The gang holds no accelerators (the node is cordoned and idle): rank 0 takes
        # every device of the node under test. Before torch is imported.
        os.environ[visibility] = os.environ.get("TRAINPOOL_VALIDATE_DEVICES", "")
    report: dict[str, Any] = {"node": node, "rank": rank}
    try:
        if rank == 0:
            seconds = _float("VALIDATE_BURN_SECONDS", 10.0) or 0.0
            report["burn_in"] = burn_in(seconds, _float("VALIDATE_MIN_GFLOPS", None))
            targets = os.environ.get("TRAINPOOL_VALIDATE_PINGMESH", "")
            ping_s = _float("TRAINPOOL_VALIDATE_PINGMESH_SECONDS", 10.0) or 0.0
            if targets and ping_s > 0:
                max_loss = _float("TRAINPOOL_VALIDATE_PINGMESH_MAX_LOSS", 0.02) or 0.0
                report["pingmesh"] = pingmesh(targets, ping_s, max_loss)
            else:
                report["pingmesh"] = "skipped: no live agent on a healthy node to probe"
        if world > 1:
            report["all_reduce"] = all_reduce(rank, world, _float("VALIDATE_MIN_GBPS", None))
    except Failed as exc:
        print(f"validation failed on {node}: {exc}", file=sys.stderr, flush=True)
        return 1
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
