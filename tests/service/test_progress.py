"""Progress in the service (sim backend): a gang that stops stepping is restarted from its
checkpoint, uncharged; a rank slower than its peers gets its node blamed and, once the
move pays for itself, its gang moved off it; a healthy gang gets no verdict."""

from __future__ import annotations

import json

from sqlmodel import select

from scheduler.store import goodput as goodputstore
from scheduler.store import jobs as jobstore
from scheduler.store import progress as progressstore
from scheduler.store.tables import AuditRow, CheckpointRow
from values.lifecycle import JobState
from values.progress import ProgressRule

from .harness import Pool, nodes, orgs

RULE = ProgressRule(
    hang_factor=10, hang_floor_seconds=60, straggler_after_seconds=60, restart_overhead_seconds=30
)


def _run(pool: Pool, seconds: float, step: float = 5.0) -> None:
    for _ in range(int(seconds / step)):
        pool.cycle(step)


def test_a_gang_that_stops_stepping_restarts_from_its_checkpoint_uncharged(db_url: str) -> None:
    pool = Pool(db_url, node_list=nodes(2), org_list=orgs(a=16), progress=RULE)
    job = pool.submit(replicas=2, env={"SIM_DURATION": 100_000, "SIM_STEP_SECONDS": 1, "SIM_HANG_AFTER": 40,
                                       "SIM_CHECKPOINT_EVERY": 20})  # fmt: skip
    pool.cycle()
    _run(pool, 95)  # stepping stops at 40 s: the limit is max(10 x 1 s, 60 s) after that
    assert pool.state(job) is JobState.RUNNING
    with pool.db.read() as s:
        assert progressstore.get(s, job).step == 40  # type: ignore[union-attr]
    _run(pool, 10)
    assert pool.state(job) is JobState.RESTARTING  # stopped with its grace to checkpoint
    pool.cycle(1)
    row = pool.job(job)
    assert (row.attempt, row.restarts, row.failure_class) == (1, 0, "hang"), row
    with pool.db.read() as s:
        restart = next(e for e in jobstore.events(s, job) if e.event == "restart")
        resumed = s.get(CheckpointRow, 2)
    assert (
        restart.reason == "hang"
        and "hung: rank 0" in restart.message
        and "no progress for" in restart.message
    )
    assert resumed is not None and resumed.step == 40  # what attempt 1 is handed (TRAINPOOL_RESUME_FROM)
    with pool.db.read() as s:
        first = jobstore.allocation(s, job, 0)
        spent = goodputstore.of_job(s, job, pool.clock())
    # Attempt 0's time after its last checkpoint is lost to the hang; the rest was kept.
    assert first is not None and first.released_at is not None
    assert spent.lost["hang"] == 16 * (first.released_at - resumed.at)
    assert spent.lost["startup"] == 16 * 5  # its first cycle saw it running
    assert spent.held == 16 * (first.released_at - first.created_at)  # attempt 1 starts now
    assert spent.productive == spent.held - sum(spent.lost.values()) and 0.3 < (spent.ratio or 0) < 0.4
    _run(pool, 600)  # attempt 1 does not hang: no second verdict
    assert (pool.state(job), pool.job(job).attempt) == (JobState.RUNNING, 1)


def test_a_gang_that_hangs_every_time_fails_after_three_hang_restarts(db_url: str) -> None:
    pool = Pool(db_url, node_list=nodes(1), org_list=orgs(a=8), progress=RULE)
    job = pool.submit(env={"SIM_DURATION": 100_000, "SIM_STEP_SECONDS": 1, "SIM_HANG_AFTER": 5,
                           "SIM_HANG_ATTEMPTS": 99})  # fmt: skip
    pool.cycle()
    _run(pool, 400)
    row = pool.job(job)
    assert (row.state, row.attempt, row.restarts) == ("FAILED", 3, 0), row
    with pool.db.read() as s:
        failed = next(e for e in jobstore.events(s, job) if e.event == "failed")
    assert "no restart left: 3 allowed (default)" in failed.message


def test_a_long_run_that_saves_between_hangs_is_restarted_past_the_limit(db_url: str) -> None:
    """The hang limit counts hangs in a row, without a checkpoint between them."""
    pool = Pool(db_url, node_list=nodes(1), org_list=orgs(a=8), progress=RULE)
    job = pool.submit(env={"SIM_DURATION": 100_000, "SIM_STEP_SECONDS": 1, "SIM_HANG_AFTER": 40,
                           "SIM_CHECKPOINT_EVERY": 20, "SIM_HANG_ATTEMPTS": 99})  # fmt: skip
    pool.cycle()
    _run(pool, 900)
    row = pool.job(job)
    assert row.state == "RUNNING" and row.attempt >= 5, row
    assert [e for e in pool.events(job) if e == "restart"] == ["restart"] * row.attempt


def test_gangs_that_step_or_never_report_get_no_verdict_in_an_hour(db_url: str) -> None:
    pool = Pool(db_url, node_list=nodes(3), org_list=orgs(a=24), progress=RULE)
    stepping = pool.submit(replicas=2, env={"SIM_DURATION": 100_000, "SIM_STEP_SECONDS": 7})
    silent = pool.submit(env={"SIM_DURATION": 100_000})
    pool.cycle()
    _run(pool, 3600, step=15)
    for job in (stepping, silent):
        row = pool.job(job)
        assert (row.state, row.attempt) == ("RUNNING", 0), row
    assert "straggler" not in pool.events(stepping)
    with pool.db.read() as s:
        progress = progressstore.get(s, stepping)
        assert progressstore.get(s, silent) is None
    assert progress is not None and progress.median_step_seconds == 7
    assert abs((progress.steps_per_second() or 0) - 1 / 7) < 0.01


def test_a_straggler_is_blamed_once_and_its_gang_moved_off_its_node_when_that_pays(db_url: str) -> None:
    pool = Pool(db_url, node_list=nodes(4), org_list=orgs(a=32), progress=RULE)
    env = {"SIM_DURATION": 100_000, "SIM_STEP_SECONDS": 1, "SIM_CHECKPOINT_EVERY": 50}
    job = pool.submit(replicas=3, env={**env, "SIM_SLOW_NODE": "h100-01", "SIM_SLOW_FACTOR": 3})
    pool.cycle()
    with pool.db.read() as s:
        (alloc,) = jobstore.live_allocations(s)
    assert "h100-01" in [n for n, _ in json.loads(alloc.assignments)]
    # Slow for 60 s: blamed, not moved yet: 40 s lost against 30 s + 15 s since the checkpoint.
    _run(pool, 65)
    assert pool.events(job).count("straggler") == 1
    assert (pool.state(job), pool.job(job).attempt) == (JobState.RUNNING, 0)
    with pool.db.read() as s:
        blames = s.exec(select(AuditRow).where(AuditRow.action == "node.blamed")).all()
    assert [(b.target, json.loads(b.detail)["why"]) for b in blames] == [("h100-01", "straggler")]
    _run(pool, 60)
    row = pool.job(job)
    assert (row.attempt, row.restarts, row.failure_class) == (1, 0, "straggler"), row
    with pool.db.read() as s:
        (alloc,) = jobstore.live_allocations(s)
        restart = next(e for e in jobstore.events(s, job) if e.event == "restart")
    assert "h100-01" not in [n for n, _ in json.loads(alloc.assignments)]  # the spare node instead
    assert restart.message.startswith(
        "moved off a straggler: straggler: rank 1 on h100-01 steps 3.00x slower"
    )
    _run(pool, 300)
    assert pool.events(job).count("straggler") == 1 and pool.job(job).attempt == 1
