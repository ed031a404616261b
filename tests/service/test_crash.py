"""Crash safety: SIGKILL the server at random moments while jobs flow; restart it.

At the end no job is lost or duplicated, every job reached a terminal state, no gang
was launched twice, and the backend never found a node overcommitted.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import select

from scheduler.store.db import open_database
from scheduler.store.tables import AllocationRow, JobRow

from .server_proc import ServerProc, admin_client

JOBS = 300
KILLS = 5
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED", "REJECTED")


def _specs(rng: random.Random) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for i in range(JOBS):
        env = {"SIM_DURATION": f"{rng.uniform(0.05, 0.6):.2f}"}
        if rng.random() < 0.15:
            env["SIM_FAIL_ATTEMPTS"] = "1"  # fails once, then succeeds
        gang = {"flavor": "h100", "replicas": rng.choice([1, 1, 2]), "accelerators": rng.choice([1, 2, 4, 8])}
        spec = {"name": f"job-{i}", "org": rng.choice("ab"), "gang": gang, "env": env,
                "restart": {"backoff_seconds": 0}}  # fmt: skip
        out.append((f"req-{i}", spec))
    return out


def _submit_all(url: str, specs: list[tuple[str, dict[str, Any]]], ids: dict[str, str]) -> None:
    with admin_client(url) as client:
        for rid, spec in specs:
            while True:  # the server may be dead right now: retry with the same request id
                try:
                    resp = client.post("/v1/jobs", json={"spec": spec, "client_request_id": rid})
                except httpx.TransportError:
                    time.sleep(0.05)
                    continue
                assert resp.status_code in (200, 201), resp.text
                ids[rid] = resp.json()["id"]
                break


def _wait_all_terminal(url: str, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    done = 0
    with admin_client(url) as client:
        while time.monotonic() < deadline:
            rows = client.get("/v1/jobs", params={"state": list(TERMINAL), "limit": 1000}).json()
            done = len(rows)
            if done >= JOBS:
                return done
            time.sleep(0.5)
    return done


def _max_overlap_per_node(allocs: list[AllocationRow]) -> dict[str, int]:
    """Sweep each node's allocations over time; the peak accelerators held at once."""
    events: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for a in allocs:
        assignments = json.loads(a.assignments)
        per_replica = a.accelerators // sum(k for _, k in assignments)
        for node, k in assignments:
            events[node].append((a.created_at, per_replica * k))
            events[node].append(
                (a.released_at if a.released_at is not None else float("inf"), -per_replica * k)
            )
    peaks = {}
    for node, evs in events.items():
        level = peak = 0
        for _, delta in sorted(evs, key=lambda e: (e[0], e[1])):  # releases before grants at equal times
            level += delta
            peak = max(peak, level)
        peaks[node] = peak
    return peaks


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_sigkill_at_random_moments_loses_and_duplicates_nothing(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    rng = random.Random(20261128)
    db = (
        f"sqlite:///{tmp_path / 'pool.db'}" if backend == "sqlite" else str(request.getfixturevalue("pg_url"))
    )
    server = ServerProc(db, tmp_path)
    server.start()
    ids: dict[str, str] = {}
    specs = _specs(rng)
    submitter = threading.Thread(target=_submit_all, args=(server.url, specs, ids))
    submitter.start()
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.2, 2.5))
            server.kill()
            server.start()
        submitter.join(timeout=120)
        done = _wait_all_terminal(server.url, timeout=150)
    finally:
        server.stop()
        submitter.join(timeout=5)
    assert len(ids) == JOBS and done >= JOBS

    store = open_database(db)
    with store.read() as s:
        jobs = list(s.exec(select(JobRow)).all())
        allocs = list(s.exec(select(AllocationRow)).all())
    store.dispose()
    assert len(jobs) == JOBS  # none duplicated
    assert {j.client_request_id for j in jobs} == {rid for rid, _ in specs}  # none lost
    assert {j.id for j in jobs} == set(ids.values())
    states = {j.state for j in jobs}
    assert states == {"SUCCEEDED"}, states
    assert all(a.state == "released" for a in allocs)
    sim = json.loads((tmp_path / "sim.json").read_text())
    assert sim["launches"] == len(allocs)  # one launch per allocated attempt, never two
    assert sim["overcommits"] == 0
    capacity = 8
    assert max(_max_overlap_per_node(allocs).values()) <= capacity
    assert server.starts == KILLS + 1
