"""Two servers on one PostgreSQL database: one leads, the other takes over when it dies,
and no node is ever given out twice."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from sqlmodel import select

from scheduler.store.db import open_database
from scheduler.store.tables import AllocationRow, JobRow

from .server_proc import ServerProc, admin_client
from .test_crash import _max_overlap_per_node

JOBS = 60


def _leaders(servers: list[ServerProc]) -> list[ServerProc]:
    return [s for s in servers if s.proc is not None and s.proc.poll() is None and s.ready()["leader"]]


def _wait_for(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_one_leads_and_the_other_takes_over(pg_url: str, tmp_path: Path) -> None:
    first, second = ServerProc(pg_url, tmp_path), ServerProc(pg_url, tmp_path)
    first.start()
    second.start()
    servers = [first, second]
    try:
        assert _wait_for(lambda: len(_leaders(servers)) == 1, 10)
        leader = _leaders(servers)[0]
        follower = second if leader is first else first
        with admin_client(follower.url) as client:  # any server takes API calls
            for i in range(JOBS):
                spec = {"name": f"f-{i}", "org": "ab"[i % 2], "env": {"SIM_DURATION": "1.5"},
                        "gang": {"flavor": "h100", "replicas": 1 + i % 2, "accelerators": 8}}  # fmt: skip
                assert client.post("/v1/jobs", json={"spec": spec}).status_code == 201
        time.sleep(2.0)
        leader.kill()
        took_over = time.monotonic()
        assert _wait_for(lambda: follower.ready()["leader"], 10)
        takeover_seconds = time.monotonic() - took_over
        with admin_client(follower.url) as client:
            assert _wait_for(
                lambda: (
                    len(client.get("/v1/jobs", params={"state": ["SUCCEEDED"], "limit": 1000}).json()) == JOBS
                ),
                120,
            )
    finally:
        for s in servers:
            s.stop()
    assert takeover_seconds < 2 + 3  # lease ttl plus a few cycles
    store = open_database(pg_url)
    with store.read() as s:
        jobs = list(s.exec(select(JobRow)).all())
        allocs = list(s.exec(select(AllocationRow)).all())
    store.dispose()
    assert len(jobs) == JOBS and {j.state for j in jobs} == {"SUCCEEDED"}
    assert max(_max_overlap_per_node(allocs).values()) <= 8
    sim = json.loads((tmp_path / "sim.json").read_text())
    assert sim["overcommits"] == 0
    assert sim["launches"] == len(allocs)
