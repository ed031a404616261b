"""The server SIGKILLed two dozen times under a mixed workload (submissions, cancels, own
failures, priority preemptions, reclaims); afterwards the core's invariants hold over
the whole recorded history, not only at the end:

- no node ever held more accelerators than it has; no org ever held more than its
  nominal plus borrowing limit;
- every allocation is a whole gang (all replicas, on nodes of its flavor);
- every event is a legal lifecycle transition and each job's events chain;
- every job is terminal, stored once, and ran each attempt at most once (one launch per
  allocation, never two).
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest
from service.server_proc import ServerProc, admin_client
from sqlmodel import col, select

from scheduler.store.db import open_database
from scheduler.store.tables import AllocationRow, JobEventRow, JobRow
from values.lifecycle import JobEvent, JobState, can

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(600)]

KILLS = int(os.environ.get("TP_KILLS", "24"))
JOBS = 240
NODES, PER_NODE = 6, 8
LIMIT = {"a": 24 + 16, "b": 24 + 16}  # nominal + borrowing limit
POOL = f"""
name: crash-history
flavors: [{{name: h100}}]
priority_classes: [{{name: low, value: 100}}, {{name: normal, value: 500}}, {{name: high, value: 1000}}]
node_groups:
  - {{flavor: h100, count: {NODES}, accelerators: {PER_NODE}, racks_per_spine: 2, name_prefix: h100}}
orgs:
  - {{name: a, quotas: {{h100: {{nominal: 24, borrowing_limit: 16}}}}}}
  - {{name: b, quotas: {{h100: {{nominal: 24, borrowing_limit: 16}}}}}}
"""
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "REJECTED"}


def _specs(rng: random.Random) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for i in range(JOBS):
        env = {"SIM_DURATION": f"{rng.uniform(0.3, 2.5):.2f}"}
        roll = rng.random()
        if roll < 0.10:
            env["SIM_FAIL_ATTEMPTS"] = "1"  # its own failure once, then success
        elif roll < 0.14:
            env["SIM_EXIT_CODE"] = "2"  # always fails: FAILED when the budget is spent
        gang = {"flavor": "h100", "replicas": rng.choice([1, 1, 2, 3]), "accelerators": rng.choice([2, 4, 8])}
        spec = {
            "name": f"job-{i}", "org": rng.choice("ab"), "gang": gang, "env": env,
            "priority": rng.choice(["low", "normal", "normal", "high"]),
            "restart": {"backoff_seconds": 0, "max_restarts": 1}, "grace_period_seconds": 0.2,
        }  # fmt: skip
        out.append((f"req-{i}", spec))
    return out


def _retrying(client: httpx.Client, method: str, path: str, **kw: Any) -> httpx.Response:
    while True:  # the server may be dead this instant
        try:
            return client.request(method, path, **kw)
        except httpx.TransportError:
            time.sleep(0.05)


def _workload(
    url: str, specs: list[tuple[str, dict[str, Any]]], ids: dict[str, str], rng: random.Random
) -> None:
    with admin_client(url) as client:
        for rid, spec in specs:
            resp = _retrying(client, "POST", "/v1/jobs", json={"spec": spec, "client_request_id": rid})
            assert resp.status_code in (200, 201), resp.text
            ids[rid] = resp.json()["id"]
            if rng.random() < 0.12 and ids:  # cancel some job, in whatever state it is
                victim = ids[rng.choice(sorted(ids))]
                resp = _retrying(client, "POST", f"/v1/jobs/{victim}/cancel")
                assert resp.status_code in (200, 409), resp.text  # 409: already terminal
            time.sleep(0.01)


def _all_jobs(url: str) -> list[dict[str, Any]]:
    with admin_client(url) as client:
        return list(_retrying(client, "GET", "/v1/jobs", params={"limit": 1000}).json())


def _peak(intervals: list[tuple[float, float, int]]) -> int:
    """The largest sum of amounts over any instant; releases sort before grants."""
    points = sorted([(t0, 1, k) for t0, _, k in intervals] + [(t1, 0, -k) for _, t1, k in intervals])
    level = peak = 0
    for _, _, k in points:
        level += k
        peak = max(peak, level)
    return peak


def test_two_dozen_crashes_under_a_mixed_workload_keep_every_invariant(tmp_path: Path) -> None:
    rng = random.Random(20261129)
    db = f"sqlite:///{tmp_path / 'pool.db'}"
    server = ServerProc(db, tmp_path, pool_yaml=POOL)
    server.start("--sim-duration", "1")
    specs, ids = _specs(rng), {}
    worker = threading.Thread(target=_workload, args=(server.url, specs, ids, random.Random(7)), daemon=True)
    worker.start()
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.3, 1.5))
            server.kill()
            server.start("--sim-duration", "1")
        worker.join(timeout=180)
        assert not worker.is_alive(), "the workload did not finish"
        deadline = time.monotonic() + 240
        while left := [j for j in _all_jobs(server.url) if j["state"] not in TERMINAL]:
            stuck = {(j["state"], j["reason"]) for j in left}
            assert time.monotonic() < deadline, (
                f"{len(left)} jobs not done 240 s after the last crash: {stuck}"
            )
            time.sleep(1)
    finally:
        server.stop()

    store = open_database(db)
    with store.read() as s:
        jobs = {j.id: j for j in s.exec(select(JobRow)).all()}
        allocs = list(s.exec(select(AllocationRow)).all())
        events = list(s.exec(select(JobEventRow).order_by(col(JobEventRow.id))).all())
    store.dispose()

    # Stored once each, none lost, all terminal.
    assert len(jobs) == JOBS and {j.client_request_id for j in jobs.values()} == {r for r, _ in specs}
    assert {j.state for j in jobs.values()} <= TERMINAL
    states = {st: sum(j.state == st for j in jobs.values()) for st in TERMINAL}
    assert states["CANCELLED"] > 0 and states["FAILED"] > 0 and states["SUCCEEDED"] > 0, states

    # Whole gangs, each attempt allocated once, launched once.
    per_attempt = defaultdict(int)
    for a in allocs:
        per_attempt[(a.job_id, a.attempt)] += 1
        spec = json.loads(jobs[a.job_id].spec)
        placed = json.loads(a.assignments)
        assert sum(k for _, k in placed) == spec["gang"]["replicas"], f"partial gang {a.job_id}"
        assert a.accelerators == spec["gang"]["replicas"] * spec["gang"]["accelerators"]
        assert a.state == "released" and a.released_at is not None
    assert max(per_attempt.values()) == 1, "an attempt allocated twice"
    sim = json.loads((tmp_path / "sim.json").read_text())
    assert sim["overcommits"] == 0 and sim["launches"] <= len(allocs)

    # Capacity per node and quota per org, at every instant of the history.
    by_node: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
    by_org: dict[str, list[tuple[float, float, int]]] = defaultdict(list)
    for a in allocs:
        per_replica = a.accelerators // sum(k for _, k in json.loads(a.assignments))
        for node, k in json.loads(a.assignments):
            by_node[node].append((a.created_at, a.released_at or 0.0, per_replica * k))
        by_org[a.org].append((a.created_at, a.released_at or 0.0, a.accelerators))
    assert max(_peak(iv) for iv in by_node.values()) <= PER_NODE
    for org, iv in by_org.items():
        assert _peak(iv) <= LIMIT[org], f"org {org} above nominal + borrowing limit"

    # Every event a legal transition, and each job's events chain from PENDING.
    last: dict[str, str] = {}
    preempted = 0
    for e in events:
        if e.from_state is None:  # facts such as "submitted", not transitions
            continue
        assert can(JobState(e.from_state), JobEvent(e.event)), f"illegal {e.from_state} --{e.event}-->"
        assert last.get(e.job_id, "PENDING") == e.from_state, f"{e.job_id}: events do not chain"
        last[e.job_id] = str(e.to_state)
        preempted += e.event == JobEvent.PREEMPT
    assert all(last.get(j, "PENDING") == row.state for j, row in jobs.items())
    assert preempted > 0, "the workload was meant to include preemptions"
    assert server.starts == KILLS + 1
    print(f"\n{KILLS} kills; final states {states}; {preempted} preemptions; {len(allocs)} allocations")
