"""PostgreSQL stops under load and comes back: the server says not-ready meanwhile, keeps
its process, resumes by itself; no acknowledged submission is lost, none is stored twice,
no gang is launched twice."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest
from service.conftest import LocalPostgres
from service.server_proc import ADMIN, ServerProc

pytestmark = [pytest.mark.slow, pytest.mark.integration]

JOB = {"name": "outage", "org": "a", "gang": {"flavor": "h100", "replicas": 1, "accelerators": 1}}


class Submitter(threading.Thread):
    """Submits jobs without pause, each with its own client_request_id, retrying a failed
    request with the same id until the server acknowledges it (as a careful client does)."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=5.0)
        self.acked: dict[str, str] = {}  # client_request_id -> job id
        self.refused: dict[int, int] = {}  # status -> count, while the database was away
        self.stop = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            rid = f"req-{n:05d}"
            while not self.stop.is_set():
                try:
                    resp = self.http.post("/v1/jobs", json={"spec": JOB, "client_request_id": rid})
                except httpx.TransportError:
                    self.refused[0] = self.refused.get(0, 0) + 1
                    time.sleep(0.1)
                    continue
                if resp.status_code in (200, 201):
                    self.acked[rid] = resp.json()["id"]
                    break
                self.refused[resp.status_code] = self.refused.get(resp.status_code, 0) + 1
                time.sleep(0.1)
            n += 1
            time.sleep(0.02)


def all_jobs(http: httpx.Client) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    while True:
        page = http.get("/v1/jobs", params={"limit": 1000, "offset": len(out)})
        page.raise_for_status()
        out += page.json()
        if len(page.json()) < 1000:
            return out


def test_database_outage_loses_and_duplicates_nothing(own_pg: LocalPostgres, tmp_path: Path) -> None:
    server = ServerProc(own_pg.url, tmp_path)
    server.start()
    client = Submitter(server.url)
    try:
        client.start()
        time.sleep(3)
        before = len(client.acked)
        own_pg.stop("fast")
        t0 = time.monotonic()
        while server.ready().get("status") == "ok":
            assert time.monotonic() - t0 < 10, "readyz still ok 10 s after the database went away"
            time.sleep(0.2)
        not_ready_after = time.monotonic() - t0
        assert httpx.get(f"{server.url}/healthz").status_code == 200, "the process stays up"
        time.sleep(5)
        during = len(client.acked) - before
        own_pg.start()
        server.wait_ready(timeout=30)
        back_after = time.monotonic() - t0
        time.sleep(3)
    finally:
        client.stop.set()
        client.join(timeout=10)
    assert server.proc is not None and server.proc.poll() is None, "the server survived the outage"
    assert during <= 2, "acknowledged while the database was down (a batch may land as it goes)"
    assert len(client.acked) > before + 10, "submissions resumed after the database came back"
    assert set(client.refused) <= {503, 0}, f"only 503 or refused connections, got {client.refused}"

    http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)
    deadline = time.monotonic() + 120
    while True:  # every acknowledged job runs to its end (sim jobs last 0.5 s)
        jobs = all_jobs(http)
        if all(j["state"] == "SUCCEEDED" for j in jobs) or time.monotonic() > deadline:
            break
        time.sleep(1)
    server.stop()
    by_request = {j["client_request_id"]: j for j in jobs}
    assert len(by_request) == len(jobs), "a client_request_id stored twice"
    missing = set(client.acked) - set(by_request)
    assert not missing, f"acknowledged but lost: {sorted(missing)[:5]}"
    assert {by_request[r]["id"] for r in client.acked} == set(client.acked.values())
    assert all(j["state"] == "SUCCEEDED" for j in jobs), {j["state"] for j in jobs}
    sim = json.loads((tmp_path / "sim.json").read_text())
    assert sim["launches"] == sum(1 + j["attempt"] for j in jobs), "a gang launched twice"
    print(
        f"\noutage: not ready after {not_ready_after:.1f}s, ready again {back_after:.1f}s after the stop; "
        f"{len(client.acked)} acknowledged, refused meanwhile {client.refused}"
    )
