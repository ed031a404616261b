"""Progress on real Ray with a real DDP gang (gloo): a rank that stops stepping is caught
and the gang restarted from its checkpoint; a rank on a slow node gets the node blamed and
the gang moved off it; the step counter carries on across both; a healthy gang gets no
verdict over five minutes."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from test_loop import DDP, LoopOnRay

from scheduler.store import jobs as jobstore
from scheduler.store import progress as progressstore
from values.domain import Node
from values.progress import ProgressRule

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("ray")]

# Short limits for a test; the defaults are minutes (values.progress.ProgressRule).
RULE = ProgressRule(hang_factor=10, hang_floor_seconds=15, straggler_after_seconds=10,
                    restart_overhead_seconds=5)  # fmt: skip


def _attempts(pool: LoopOnRay, job: str) -> list[str]:
    """What each attempt of the DDP example wrote: its first and last step, and how it ended."""
    log = pool.ckpt / job / "progress.log"
    return log.read_text().splitlines() if log.exists() else []


def test_a_rank_that_hangs_is_caught_within_the_bound_and_the_gang_resumes_from_its_checkpoint(
    make_backend: Callable[..., object], tmp_path: Path
) -> None:
    pool = LoopOnRay(make_backend(), tmp_path, {"h100": 8}, progress=RULE)
    train = ["python", str(DDP), "--steps", "120", "--checkpoint-every", "10", "--step-seconds", ".1",
             "--hang-at-step", "25", "--hang-rank", "1", "--progress-every", "1"]  # fmt: skip
    job = pool.submit("h100", replicas=2, accelerators=4, env={}, command=train, grace_period_seconds=3)
    pool.run_until(job, lambda j: j.attempt == 1, timeout=120)
    with pool.db.read() as s:
        restart = next(e for e in jobstore.events(s, job) if e.event == "restart")
        started = next(e for e in jobstore.events(s, job) if e.event == "started")
    assert restart.reason == "hang" and "hung: rank" in restart.message, restart.message
    # The verdict comes within a few cycles of the limit, counted from the hung rank's last
    # report; from the start it also holds the processes' start-up (imports, gloo's
    # rendezvous: seconds, more on a loaded machine) and the 2.5 s of steps before the hang,
    # and it stays well under gloo's own 60 s collective timeout.
    silent, limit = (float(x) for x in re.findall(r"for (\d+)s \(limit (\d+)s\)", restart.message)[0])
    caught = restart.at - started.at
    print(f"\nhang caught {caught:.1f}s from start, {silent:.0f}s from the last report (limit {limit:g}s)")
    assert limit == RULE.hang_floor_seconds and limit <= silent < limit + 5, restart.message
    assert caught < 60
    done = pool.run_until(job, lambda j: j.state in ("SUCCEEDED", "FAILED"), timeout=120)
    row = pool.job(job)
    assert (row.state, row.restarts, row.attempt) == ("SUCCEEDED", 0, 1), (done, row.message)
    (second,) = [line for line in _attempts(pool, job) if line.startswith("attempt 1")]
    assert second.startswith("attempt 1 first 20 ")  # resumed after the step-19 checkpoint


def test_a_rank_on_a_slow_node_gets_it_blamed_and_the_gang_moved_off_it(
    ray_cluster: object, make_backend: Callable[..., object], tmp_path: Path
) -> None:
    cluster = ray_cluster
    spare = [Node(name=f"s-{i:02d}", flavor="v100", accelerators=4) for i in range(3)]
    for node in spare:
        cluster.add_node(node)  # type: ignore[attr-defined]
    backend = make_backend()
    pool = LoopOnRay(backend, tmp_path, {"v100": 12}, progress=RULE)
    try:
        train = ["python", str(DDP), "--steps", "99999", "--checkpoint-every", "10", "--step-seconds", ".05",
                 "--slow-node", "s-01", "--slow-seconds", ".3", "--progress-every", "1"]  # fmt: skip
        job = pool.submit("v100", replicas=2, accelerators=4, env={},
                          command=train, grace_period_seconds=10)  # fmt: skip
        pool.run_until(job, lambda j: j.state == "RUNNING", timeout=90)
        assert "s-01" in _nodes(pool)  # the core fills the spare nodes in order
        pool.run_until(job, lambda j: j.attempt == 1, timeout=120)
        with pool.db.read() as s:
            events = jobstore.events(s, job)
        noted = next(e for e in events if e.event == "straggler")
        restart = next(e for e in events if e.event == "restart")
        print(f"\n{noted.message}\n{restart.message}")
        assert "on s-01" in noted.message and restart.reason == "straggler"
        assert pool.job(job).restarts == 0
        pool.run_until(job, lambda j: j.state == "RUNNING", timeout=90)
        assert "s-01" not in _nodes(pool)
        (stopped,) = _attempts(pool, job)  # attempt 0 saved in its grace period and left
        last = int(stopped.split(" last ")[1].split()[0])
        key = f"{job}/1"
        pool.run_until(job, lambda j: any(f"step {last + 1} loss" in line
                                          for line in backend.logs(key, 50, time.time(), replica=0) or []),
                       timeout=60)  # fmt: skip
        assert any(
            f"resumed from step {last}" in line
            for line in backend.logs(key, 50, time.time(), replica=0) or []
        )
        pool.run_until(job, lambda j: True, timeout=5)
        with pool.db.read() as s:
            assert "straggler" not in [e.event for e in jobstore.events(s, job) if e.attempt == 1]
    finally:
        for node in spare:
            if node.name in cluster.node_ids:  # type: ignore[attr-defined]
                cluster.kill_node(node.name)  # type: ignore[attr-defined]


def _nodes(pool: LoopOnRay) -> list[str]:
    with pool.db.read() as s:
        (alloc,) = jobstore.live_allocations(s)
    return [n for n, _ in json.loads(alloc.assignments)]


SOAK_SECONDS = 300.0


@pytest.mark.timeout(SOAK_SECONDS + 240)
def test_a_healthy_gang_gets_no_verdict_over_five_minutes(
    make_backend: Callable[..., object], tmp_path: Path
) -> None:
    """The false-positive soak: the test's short limits (15 s hang floor, a straggler after
    10 s at 1.5x), two healthy ranks on one machine shared with the rest of the suite."""
    pool = LoopOnRay(make_backend(), tmp_path, {"h100": 8}, progress=RULE)
    train = ["python", str(DDP), "--steps", "999999", "--checkpoint-every", "50", "--step-seconds", ".1",
             "--progress-every", "1"]  # fmt: skip
    job = pool.submit("h100", replicas=2, accelerators=4, env={}, command=train, grace_period_seconds=3)
    pool.run_until(job, lambda j: j.state == "RUNNING", timeout=90)
    began, worst, samples, first_step = time.monotonic(), 1.0, 0, None
    while time.monotonic() - began < SOAK_SECONDS:
        pool.run_until(job, lambda j: True, timeout=5)
        with pool.db.read() as s:
            seen = progressstore.get(s, job)
        if seen is not None and seen.attempt == 0:
            times = sorted(r.step_seconds for r in seen.ranks if r.step_seconds)
            if len(times) == 2:
                worst, samples = max(worst, times[1] / times[0]), samples + 1
            first_step = seen.step if first_step is None else first_step
        time.sleep(1.0)
    with pool.db.read() as s:
        events = [e.event for e in jobstore.events(s, job)]
        last = progressstore.get(s, job)
    row = pool.job(job)
    steps = f"steps {first_step} -> {last.step if last else None}"
    print(f"\n{SOAK_SECONDS:g}s soak: {steps}, {samples} samples, worst rank step-time ratio "
          f"{worst:.2f} (straggler at {RULE.straggler_ratio:g})")  # fmt: skip
    assert (row.state, row.attempt, row.restarts) == ("RUNNING", 0, 0), (row.message, events)
    assert "straggler" not in events and "restart" not in events, events
    assert last is not None and first_step is not None and last.step > first_step + 500  # it kept stepping
    assert samples > 100
