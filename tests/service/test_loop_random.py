"""Random histories through the real loop, store and sim backend, checked step by step.

Each history mixes submissions (two orgs, priorities, gang sizes, failing jobs),
cancellations, node failures and repairs, cordons and server restarts. After every
cycle: no node is overcommitted, each job holds at most one live allocation and only
in a state that may hold one, and every job's event log is a legal chain. At the end,
with failures stopped, every job reaches a terminal state.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
from sqlmodel import select

from scheduler.backends.sim import SimBackend
from scheduler.store import jobs as jobstore
from scheduler.store import nodes as nodestore
from scheduler.store.tables import JobEventRow, JobRow
from values.domain import Health
from values.lifecycle import TERMINAL, JobState, can

from .harness import Clock, Pool, nodes, orgs

HOLDING = {"ADMITTED", "STARTING", "RUNNING", "PREEMPTED", "RESTARTING", "CANCELLED", "FAILED", "SUCCEEDED"}


def _check(pool: Pool) -> None:
    assert pool.backend.overcommits == 0
    with pool.db.read() as s:
        jobs = {j.id: j for j in s.exec(select(JobRow)).all()}
        live = jobstore.live_allocations(s)
        events = list(s.exec(select(JobEventRow).order_by(JobEventRow.id)).all())  # type: ignore[arg-type]
    per_job = Counter(a.job_id for a in live)
    assert max(per_job.values(), default=0) <= 1
    for a in live:
        assert jobs[a.job_id].state in HOLDING, (a.job_id, jobs[a.job_id].state)
        if a.state == "active":
            assert jobs[a.job_id].state in ("ADMITTED", "STARTING", "RUNNING")
    state: dict[str, str] = {}
    for e in events:
        if e.to_state is None:
            continue
        if e.from_state is not None:
            assert state.get(e.job_id) == e.from_state, e
            assert can(JobState(e.from_state), e.event)  # type: ignore[arg-type]
        state[e.job_id] = e.to_state
    assert all(state[j] == row.state for j, row in jobs.items())


@pytest.mark.parametrize("seed", range(6))
def test_random_histories_keep_the_invariants(seed: int, tmp_path: Path) -> None:
    rng = random.Random(seed)
    url = f"sqlite:///{tmp_path / 'pool.db'}"
    state = tmp_path / "sim.json"
    pool_nodes = nodes(6, racks=2)
    clock = Clock()

    def start() -> Pool:
        backend = SimBackend(pool_nodes, default_duration=20, state_path=state)
        return Pool(url, backend=backend, clock=clock, org_list=orgs(a=24, b=24))

    pool = start()
    submitted: list[str] = []
    for _ in range(70):
        roll = rng.random()
        if roll < 0.45:
            env = {"SIM_DURATION": rng.choice([5, 15, 40])}
            if rng.random() < 0.2:
                env["SIM_FAIL_ATTEMPTS"] = 1
            submitted.append(pool.submit(
                org=rng.choice("ab"), replicas=rng.choice([1, 1, 2, 3]), accelerators=rng.choice([2, 4, 8]),
                priority=rng.choice(["low", "normal", "high"]), env=env, restart={"backoff_seconds": 1},
            ))  # fmt: skip
        elif roll < 0.55 and submitted:
            victim = rng.choice(submitted)
            with pool.db.write() as s:
                job = jobstore.get(s, victim)
                if JobState(job.state) not in TERMINAL:
                    jobstore.cancel(s, job, clock(), by="test")
        elif roll < 0.62:
            node = rng.choice(pool_nodes).name
            health = rng.choice([Health.UNHEALTHY, Health.HEALTHY, Health.DEGRADED])
            pool.backend.set_health(node, health, clock())
        elif roll < 0.66:
            with pool.db.write() as s:
                row = nodestore.get_node(s, rng.choice(pool_nodes).name)
                if row is not None:
                    nodestore.set_cordon(s, row, not row.cordoned, clock())
        elif roll < 0.72:
            pool = start()  # a server restart: new process state, same database and cluster
        pool.cycle(rng.choice([0.5, 1, 3, 7]))
        _check(pool)
    for node in pool_nodes:  # repair everything, then let the queue drain
        pool.backend.set_health(node.name, Health.HEALTHY, clock())
    with pool.db.write() as s:
        for row in nodestore.list_nodes(s):
            nodestore.set_cordon(s, row, False, clock())
    for _ in range(200):
        pool.cycle(5)
        if all(pool.state(j) in TERMINAL for j in submitted):
            break
    _check(pool)
    stuck = {j: pool.state(j) for j in submitted if pool.state(j) not in TERMINAL}
    assert not stuck
