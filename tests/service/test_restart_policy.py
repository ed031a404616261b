"""The restart policy by failure category in the control loop (sim backend): each category
counts its own restarts, also across a restart of the server; an OOM kill, a timeout and
a move off an unhealthy node follow their own rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scheduler.backends.sim import SimBackend
from scheduler.store import jobs as jobstore
from scheduler.store import nodes as nodestore
from scheduler.store.tables import NodeRow
from values.domain import Health
from values.lifecycle import JobState

from .harness import Pool, nodes, orgs


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'pool.db'}"


def _restarts(pool: Pool, job: str) -> list[tuple[str, str | None]]:
    with pool.db.read() as s:
        return [(e.event, e.reason) for e in jobstore.events(s, job) if e.event in ("restart", "failed")]


def test_each_category_counts_its_own_restarts_across_a_restart_of_the_server(db_url: str) -> None:
    # Two exits (attempts 0 and 1 exit 1), then OOM kills (exit 137). The spec allows two
    # restarts for exits and one for OOM, and none on the shared budget: the job runs four
    # times. The server is restarted after the two exits: the counts are the store's.
    first = Pool(db_url)
    restart = {"max_restarts": 0, "backoff_seconds": 0, "on": {"exit": 2, "oom": 1}}
    env = {"SIM_DURATION": 10, "SIM_FAIL_ATTEMPTS": 2, "SIM_EXIT_CODE": 137}
    job = first.submit(env=env, restart=restart)
    first.cycle()
    first.cycle(11)
    first.cycle(11)
    assert (first.job(job).attempt, first.job(job).restarts) == (2, 2)
    first.db.engine.dispose()
    again = Pool(db_url, clock=first.clock, backend=first.backend)
    again.cycle(11)
    assert (again.state(job), again.job(job).attempt) == (JobState.STARTING, 3)
    again.cycle(11)
    row = again.job(job)
    assert (row.state, row.failure_class, row.exit_code, row.restarts) == ("FAILED", "job", 137, 3)
    assert _restarts(again, job) == [
        ("restart", "exit"),
        ("restart", "exit"),
        ("restart", "oom"),
        ("failed", "oom"),
    ]
    assert "no restart left: 1 allowed (restart.on.oom)" in row.message


def test_an_oom_kill_that_the_spec_never_restarts_fails_with_restarts_left(url: str) -> None:
    pool = Pool(url)
    job = pool.submit(
        env={"SIM_DURATION": 10, "SIM_EXIT_CODE": 137}, restart={"max_restarts": 5, "on": {"oom": "never"}}
    )
    pool.cycle()
    pool.cycle(11)
    row = pool.job(job)
    assert (row.state, row.reason, row.failure_class, row.restarts) == ("FAILED", "oom", "job", 0)


def test_a_timeout_restarts_where_the_spec_allows_it_with_its_grace_to_checkpoint(url: str) -> None:
    backend = SimBackend(nodes(2), default_duration=100.0, stop_delay=5.0)
    pool = Pool(url, backend=backend)
    job = pool.submit(
        max_runtime_seconds=30, grace_period_seconds=20, restart={"backoff_seconds": 0, "on": {"timeout": 1}}
    )
    pool.cycle()
    pool.cycle(1)
    pool.cycle(30)  # past its limit: stopped with its grace, its nodes held meanwhile
    row = pool.job(job)
    assert (row.state, row.reason, row.failure_class) == ("RESTARTING", "timeout", "timeout")
    pool.cycle(5)  # gone: the second attempt starts, with the whole limit again
    assert (pool.state(job), pool.job(job).attempt) == (JobState.STARTING, 1)
    pool.cycle(1)
    pool.cycle(30)
    row = pool.job(job)
    assert (row.state, row.failure_class) == ("FAILED", "timeout")
    assert "no restart left: 1 allowed (restart.on.timeout)" in row.message
    assert backend.overcommits == 0


def test_a_move_off_an_unhealthy_node_follows_the_health_rule(url: str) -> None:
    # Two jobs on two nodes that go unhealthy; the one whose spec never restarts after a
    # health move fails once its gang is gone, the other comes back on the third node.
    pool = Pool(url, node_list=nodes(3), org_list=orgs(a=24))
    strict = pool.submit(restart={"on": {"health": "never"}})
    usual = pool.submit()
    pool.cycle()
    pool.cycle(1)
    with pool.db.write() as s:
        for a in jobstore.live_allocations(s):
            (node, _), *_ = json.loads(a.assignments)
            row = s.get(NodeRow, node)
            assert row is not None
            nodestore.report_health(s, row, Health.UNHEALTHY, "pingmesh: loss", pool.clock())
    pool.cycle(1)  # both moved off: asked to stop
    assert {pool.state(strict), pool.state(usual)} == {JobState.PREEMPTED}
    pool.cycle(1)
    row = pool.job(strict)
    assert (row.state, row.reason, row.failure_class) == ("FAILED", "health", "infrastructure")
    assert "health failures never restart (restart.on.health)" in row.message
    assert pool.state(usual) is JobState.STARTING and pool.job(usual).attempt == 1
