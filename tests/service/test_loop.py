"""The control loop on the sim backend: jobs run, finish, fail, get preempted, survive restarts."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from scheduler.backends.sim import SimBackend
from scheduler.control.wake import Pace, Wake
from scheduler.store import jobs as jobstore
from scheduler.store import lease
from scheduler.store.db import open_database
from values.decisions import PendingReason
from values.domain import Health, PriorityClass
from values.lifecycle import IllegalTransition, JobState
from values.snapshot import Ordering, Policy

from .harness import Pool, nodes, orgs


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'pool.db'}"


def test_a_job_runs_and_succeeds(db_url: str) -> None:
    pool = Pool(db_url)
    job = pool.submit(env={"SIM_DURATION": 50})
    pool.cycle()
    assert pool.state(job) is JobState.STARTING
    pool.cycle(1)
    assert pool.state(job) is JobState.RUNNING
    pool.cycle(60)
    assert pool.state(job) is JobState.SUCCEEDED
    assert pool.events(job) == ["submitted", "admit", "launched", "started", "succeeded"]
    with pool.db.read() as s:
        assert jobstore.live_allocations(s) == []


def test_a_gang_too_large_for_free_capacity_waits_with_a_reason(url: str) -> None:
    pool = Pool(url, org_list=orgs(a=24))
    first = pool.submit(replicas=2)
    second = pool.submit(replicas=1)
    pool.cycle()
    assert pool.state(first) is JobState.STARTING
    assert pool.state(second) is JobState.PENDING
    # The loop stores the core's reason and message as they are (which reason is the
    # core's contract, tested there).
    waiting = pool.job(second)
    assert waiting.reason in {r.value for r in PendingReason} and waiting.message


def test_a_failing_job_is_restarted_then_fails_when_its_budget_is_spent(url: str) -> None:
    pool = Pool(url)
    spec_restart = {"max_restarts": 1, "backoff_seconds": 5, "backoff_max_seconds": 5}
    job = pool.submit(env={"SIM_DURATION": 10, "SIM_EXIT_CODE": 3}, restart=spec_restart)
    pool.cycle()
    pool.cycle(11)  # exits 3: first failure, restarts left
    row = pool.job(job)
    assert (row.state, row.attempt, row.restarts) == ("PENDING", 1, 1)
    assert row.eligible_at == pytest.approx(pool.clock() + 5)
    pool.cycle(6)  # backoff over: launched again
    assert pool.state(job) is JobState.STARTING
    pool.cycle(11)
    row = pool.job(job)
    assert (row.state, row.failure_class, row.exit_code) == ("FAILED", "job", 3)


def test_a_job_that_fails_twice_then_succeeds(url: str) -> None:
    pool = Pool(url)
    job = pool.submit(env={"SIM_DURATION": 10, "SIM_FAIL_ATTEMPTS": 2}, restart={"backoff_seconds": 0})
    for _ in range(8):
        pool.cycle(11)
    row = pool.job(job)
    assert (row.state, row.attempt, row.restarts) == ("SUCCEEDED", 2, 2)


def test_a_lost_node_restarts_the_job_elsewhere_without_charging_it(url: str) -> None:
    pool = Pool(url)
    job = pool.submit()
    pool.cycle()
    pool.cycle(1)
    with pool.db.read() as s:
        node = jobstore.live_allocations(s)[0].assignments
    lost = node.split('"')[1]
    pool.backend.set_health(lost, Health.UNHEALTHY, pool.clock())
    pool.cycle(1)
    row = pool.job(job)
    assert row.restarts == 0 and row.failure_class == "infrastructure"
    assert lost in row.avoid_nodes
    assert row.state in ("ADMITTED", "STARTING")  # requeued and placed on the other node
    with pool.db.read() as s:
        assert lost not in jobstore.live_allocations(s)[0].assignments


def _nodes_of(pool: Pool, job: str) -> set[str]:
    with pool.db.read() as s:
        live = [a for a in jobstore.live_allocations(s) if a.job_id == job]
    return {n for a in live for n, _ in json.loads(a.assignments)}


def test_a_lost_gangs_survivors_keep_their_node_until_they_are_gone(url: str) -> None:
    # Two replicas on two of three nodes; one node dies. The survivor's collective fails
    # and it takes 5 s to exit: its node is not free until then, and the job, waiting to
    # be placed again, is RESTARTING where everyone can see it.
    backend = SimBackend(nodes(3), default_duration=100.0, stop_delay=5.0)
    pool = Pool(url, backend=backend)
    job = pool.submit(replicas=2, restart={"backoff_seconds": 0})
    pool.cycle()
    pool.cycle(1)
    lost, survivor = sorted(_nodes_of(pool, job))
    backend.set_health(lost, Health.UNHEALTHY, pool.clock())
    pool.cycle(1)
    assert pool.state(job) is JobState.RESTARTING
    assert _nodes_of(pool, job) == {lost, survivor}  # held: stopping, not released
    pool.cycle(2)
    assert pool.state(job) is JobState.RESTARTING
    pool.cycle(3)  # the survivor has exited: requeued and placed on the two healthy nodes
    row = pool.job(job)
    assert (row.state, row.attempt, row.restarts, row.failure_class) == ("STARTING", 1, 0, "infrastructure")
    assert lost not in _nodes_of(pool, job)
    assert backend.overcommits == 0  # no second gang was started beside the survivor


def test_a_failed_gang_is_charged_and_holds_its_nodes_until_every_rank_exits(url: str) -> None:
    backend = SimBackend(nodes(2), default_duration=100.0, stop_delay=5.0)
    pool = Pool(url, backend=backend)
    env = {"SIM_DURATION": 10, "SIM_FAIL_ATTEMPTS": 1}
    job = pool.submit(replicas=2, env=env, restart={"backoff_seconds": 0})
    pool.cycle()
    pool.cycle(11)  # rank 0 exited 1; rank 1 follows 5 s later
    row = pool.job(job)
    assert (row.state, row.restarts, row.failure_class) == ("RESTARTING", 1, "job")
    assert len(_nodes_of(pool, job)) == 2
    pool.cycle(5)
    assert pool.state(job) is JobState.STARTING and pool.job(job).attempt == 1
    assert backend.overcommits == 0


def test_a_survivors_early_exit_is_the_nodes_fault_when_the_loss_follows_inside_the_window(url: str) -> None:
    # The order a real cluster shows: the survivor's collective fails at once, the node's
    # loss is noticed seconds later. Held for the window, the exit is not charged.
    backend = SimBackend(nodes(3), default_duration=100.0, stop_delay=5.0, correlation_window=5.0)
    pool = Pool(url, backend=backend)
    env = {"SIM_DURATION": 10, "SIM_EXIT_CODE": 1}
    job = pool.submit(replicas=2, env=env, restart={"backoff_seconds": 0})
    pool.cycle()
    pool.cycle(10)  # rank 0 exits 1 now; rank 1 still runs
    assert pool.state(job) is JobState.RUNNING  # held for the window
    pool.cycle(2)
    with pool.db.read() as s:
        rank1_node = json.loads(jobstore.live_allocations(s)[0].assignments)[1][0]
    backend.set_health(rank1_node, Health.UNHEALTHY, pool.clock())
    pool.cycle(1)
    row = pool.job(job)
    assert (row.restarts, row.failure_class) == (0, "infrastructure")


def test_the_room_a_reclaim_freed_goes_to_the_reclaimer_not_to_a_borrower_ahead_of_it(url: str) -> None:
    # Priority order: a's urgent borrower is ahead of b's job in the queue. b reclaims
    # its guarantee from a's borrower; once that victim has exited, b's job is nominated
    # (persisted, so a restarted or new leader knows it too) and takes the room.
    backend = SimBackend(nodes(2), default_duration=100.0, stop_delay=5.0)
    policy = Policy(ordering=Ordering.PRIORITY, priority_preemption=False)
    pool = Pool(url, backend=backend, org_list=orgs(a=8, b=8), policy=policy)
    first, second = pool.submit("a", priority_value=100), pool.submit("a", priority_value=100)
    pool.cycle()
    claim = pool.submit("b")
    pool.cycle(1)
    states = {pool.state(first), pool.state(second)}
    assert states == {JobState.RUNNING, JobState.PREEMPTED}  # one stopping for b's job: 5 s to exit
    urgent = pool.submit("a", priority_value=900)  # would borrow the same room
    pool.cycle(1)
    assert not pool.job(claim).nominated  # its victim has not exited yet
    pool.cycle(5)
    assert pool.state(claim) is JobState.STARTING, pool.job(claim).reason
    assert not pool.job(claim).nominated  # cleared on admission
    assert pool.state(urgent) is JobState.PENDING
    events = pool.events(claim)
    assert events.count("admit") == 1


def test_a_job_that_outlives_its_nodes_runs_again_on_a_repaired_one(url: str) -> None:
    # Two nodes: the job loses one, runs on the other, the first is repaired, then the
    # second dies too. Avoiding every node it ever lost would leave it nowhere to run.
    backend = SimBackend(nodes(2), default_duration=100.0)
    pool = Pool(url, backend=backend)
    job = pool.submit(restart={"backoff_seconds": 0})
    pool.cycle()
    for attempt in (1, 2):
        (where,) = _nodes_of(pool, job)
        backend.set_health(where, Health.UNHEALTHY, pool.clock())
        pool.cycle(1)
        assert pool.job(job).attempt == attempt and where not in _nodes_of(pool, job)
        backend.set_health(where, Health.HEALTHY, pool.clock())  # repaired
    row = pool.job(job)
    assert (row.state, row.restarts) == ("STARTING", 0)
    assert json.loads(row.avoid_nodes) == [where]


def test_the_loop_parses_a_jobs_spec_once_from_submit_to_success(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[str] = []
    real = jobstore.spec_of

    def counting(job):  # type: ignore[no-untyped-def]
        parsed.append(job.id)
        return real(job)

    monkeypatch.setattr(jobstore, "spec_of", counting)
    pool = Pool(url, node_list=nodes(1))
    first = pool.submit(env={"SIM_DURATION": 10})
    second = pool.submit(env={"SIM_DURATION": 10})  # waits: its reason is written, its version moves
    for _ in range(6):
        pool.cycle(5)
    assert pool.state(first) is JobState.SUCCEEDED and pool.state(second) is JobState.SUCCEEDED
    assert sorted(parsed) == sorted([first, second])


def test_cancel_stops_the_gang_and_frees_the_node(url: str) -> None:
    pool = Pool(url, node_list=nodes(1))
    first = pool.submit()
    second = pool.submit()
    pool.cycle()
    pool.cycle(1)
    with pool.db.write() as s:
        jobstore.cancel(s, jobstore.get(s, first), pool.clock(), by="test")
    pool.cycle(1)  # stop sent; the sim stops at once
    pool.cycle(1)
    assert pool.state(first) is JobState.CANCELLED
    assert pool.state(second) in (JobState.STARTING, JobState.RUNNING)


def test_a_server_restart_between_admit_and_launch_launches_exactly_once(url: str, tmp_path: Path) -> None:
    state = tmp_path / "sim.json"
    pool = Pool(url, backend=SimBackend(nodes(2), state_path=state))
    job = pool.submit()
    # The server dies after committing ADMITTED, before the backend heard of it.
    pool.loop.backend = SimBackend(nodes(2))  # a launch into the void
    pool.cycle()
    assert pool.state(job) is JobState.STARTING
    restarted = Pool(url, backend=SimBackend(nodes(2), state_path=state), clock=pool.clock)
    restarted.cycle(1)
    # The real backend never saw it: the restarted server treats it as lost and requeues.
    assert restarted.job(job).attempt in (0, 1)
    for _ in range(3):
        restarted.cycle(1)
    assert restarted.state(job) in (JobState.STARTING, JobState.RUNNING)
    assert restarted.backend.launches == 1


def test_reconcile_after_restart_adopts_running_gangs(url: str, tmp_path: Path) -> None:
    state = tmp_path / "sim.json"
    pool = Pool(url, backend=SimBackend(nodes(2), state_path=state, default_duration=100))
    jobs = [pool.submit(), pool.submit()]
    pool.cycle()
    restarted = Pool(
        url, backend=SimBackend(nodes(2), state_path=state, default_duration=100), clock=pool.clock
    )
    restarted.cycle(1)
    assert [restarted.state(j) for j in jobs] == [JobState.RUNNING, JobState.RUNNING]
    restarted.cycle(200)
    assert [restarted.state(j) for j in jobs] == [JobState.SUCCEEDED, JobState.SUCCEEDED]
    assert restarted.backend.launches == 2


def test_only_the_lease_holder_runs_cycles(url: str) -> None:
    leader = Pool(url, holder="one")
    follower = Pool(url, holder="two", clock=leader.clock, db=open_database(url))
    leader.cycle()
    job = leader.submit()
    follower.cycle()
    assert follower.loop.is_leader is False
    assert leader.state(job) is JobState.PENDING  # the follower decided nothing
    leader.cycle()
    assert leader.loop.is_leader and leader.state(job) is JobState.STARTING
    # The leader dies (stops renewing); after the lease expires the follower takes over.
    follower.cycle(31)
    assert follower.loop.is_leader
    with follower.db.read() as s:
        row = lease.current(s)
        assert row is not None and row.holder == "two" and row.epoch == 2


def test_a_launch_that_blows_up_in_the_backend_requeues_the_job_as_an_infrastructure_failure(
    url: str,
) -> None:
    class Broken(SimBackend):
        def launch(self, launch: object, now: float) -> None:
            raise OSError("disk full")

    pool = Pool(url, backend=Broken(nodes(2)))
    job = pool.submit()
    pool.cycle()
    row = pool.job(job)
    assert (row.state, row.failure_class, row.restarts, row.attempt) == ("PENDING", "infrastructure", 0, 1)
    assert pool.events(job) == ["submitted", "admit", "restart", "requeue"]
    with pool.db.read() as s:
        restart = jobstore.events(s, job)[2]
    assert restart.reason == "infrastructure" and "disk full" in restart.message


def test_the_sim_state_directory_is_created(tmp_path: Path) -> None:
    backend = SimBackend(nodes(1), state_path=tmp_path / "a" / "b" / "sim.json")
    backend.stop("nothing/0", 0.0, 0.0)
    assert (tmp_path / "a" / "b").is_dir()


def test_usage_is_charged_while_running_and_exactly_once_across_a_restart(url: str, tmp_path: Path) -> None:
    from scheduler.store import usage as usagestore

    state = tmp_path / "sim.json"
    pool = Pool(url, backend=SimBackend(nodes(2), state_path=state))
    pool.submit(env={"SIM_DURATION": 100})  # 8 accelerators for 100 s

    def charged() -> float:
        with pool.db.read() as s:
            rows = usagestore.report(s, since=0, until=pool.clock() + 3600, by="org", orgs=None)
        return sum(float(r["accelerator_hours"]) for r in rows) * 3600  # type: ignore[arg-type]

    pool.cycle()
    for _ in range(5):
        pool.cycle(10)
    assert 8 * 30 <= charged() <= 8 * 50  # charged on the way, at the ledger's cadence
    pool = Pool(url, backend=SimBackend(nodes(2), state_path=state), clock=pool.clock)  # restart
    for _ in range(8):
        pool.cycle(10)
    assert charged() == pytest.approx(8 * 100, abs=0.01)  # the report rounds to 1e-6 hours


def test_a_leader_that_stops_hands_the_lease_over_at_once(url: str) -> None:
    import threading

    leader = Pool(url, holder="one")
    wake = Wake()
    runner = threading.Thread(target=leader.loop.run, args=(wake,))
    runner.start()
    deadline = time.monotonic() + 10
    while not leader.loop.is_leader and time.monotonic() < deadline:
        time.sleep(0.01)
    wake.stop()
    runner.join(timeout=10)
    follower = Pool(url, holder="two", clock=leader.clock, db=open_database(url))
    follower.cycle()  # same instant: no waiting out the old lease
    assert follower.loop.is_leader


def test_cancels_racing_the_loop_never_fail_a_cycle(db_url: str) -> None:
    import threading

    pool = Pool(db_url, node_list=nodes(4), org_list=orgs(a=32))
    jobs = [pool.submit(env={"SIM_DURATION": 3}) for _ in range(40)]
    errors: list[BaseException] = []
    done = threading.Event()

    def cancel_all() -> None:
        for job_id in jobs[::2]:
            for _ in range(20):
                try:
                    with pool.db.write() as s:
                        jobstore.cancel(s, jobstore.get(s, job_id), pool.clock(), by="racer")
                    break
                except jobstore.StaleWrite:
                    continue  # the loop moved it first: read again
                except Exception as exc:  # an illegal move: already finished
                    errors.append(exc)
                    break
        done.set()

    racer = threading.Thread(target=cancel_all)
    racer.start()
    cycles = 0
    while not done.is_set() or cycles < 30:
        pool.loop.cycle()  # raises if a cycle fails
        pool.clock.t += 1
        cycles += 1
    racer.join()
    states = [pool.state(j) for j in jobs]
    assert all(s in (JobState.CANCELLED, JobState.SUCCEEDED) for s in states), states
    assert all(s is JobState.SUCCEEDED for s in states[1::2])
    assert all(isinstance(e, IllegalTransition) for e in errors)  # cancelling a finished job
    with pool.db.read() as s:
        assert jobstore.live_allocations(s) == []


def test_the_loop_keeps_parsed_specs_of_live_jobs_only(url: str) -> None:
    """A long-running server sees every job once: what it keeps between cycles must
    shrink again when jobs end (a cache of every spec ever parsed grew in the soak)."""
    pool = Pool(url, node_list=nodes(2), org_list=orgs(a=16))
    jobs = [pool.submit(name=f"train-{i}", env={"SIM_DURATION": 10}) for i in range(6)]
    pool.cycle()
    pool.cycle(1)
    assert sum(pool.state(j) is JobState.RUNNING for j in jobs) == 2
    assert len(pool.loop._live.specs) == 6  # the live jobs, running and pending: each parsed once
    for _ in range(6):
        pool.cycle(11)
    assert all(pool.state(j) is JobState.SUCCEEDED for j in jobs)
    assert len(pool.loop._live.specs) == 0


def test_an_exit_the_backend_foresees_is_seen_without_waiting_for_the_interval(tmp_path: Path) -> None:
    """The sim backend knows when its gangs end and says so through the loop's hook."""
    import threading

    pool = Pool(f"sqlite:///{tmp_path / 'pool.db'}", backend=SimBackend(nodes(2)))
    pool.loop.clock = time.time  # real time: the hook's exit is due in real seconds
    job = pool.submit(env={"SIM_DURATION": 0.5})
    wake = Wake(Pace(interval=60.0, batch_delay=0.0, min_gap=0.05))
    runner = threading.Thread(target=pool.loop.run, args=(wake,))
    runner.start()
    try:
        deadline = time.monotonic() + 20
        while pool.state(job) is not JobState.SUCCEEDED and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pool.state(job) is JobState.SUCCEEDED, "the exit waited for the 60 s interval"
    finally:
        wake.stop()
        runner.join(timeout=10)


def test_an_exit_due_while_the_cycle_ran_is_due_at_once(tmp_path: Path) -> None:
    """A cycle that outlasts a gang's run (a loaded machine) must not leave its exit to the
    interval: the first change after what the cycle observed is already past."""
    pool = Pool(f"sqlite:///{tmp_path / 'pool.db'}", backend=SimBackend(nodes(2)))
    pool.submit(env={"SIM_DURATION": 0.5})
    pool.cycle()  # launched at the cycle's clock
    pool.clock.t += 0.6  # the cycle took 0.6 s: the gang has exited, unseen
    due = pool.loop._expected_change()
    assert due is not None and due <= time.monotonic()


class FailingOnceBackend(SimBackend):
    """Its first poll fails, as a cycle does when the database is locked for too long."""

    failed = False

    def gangs(self, now: float):  # type: ignore[no-untyped-def]
        if not self.failed:
            self.failed = True
            raise RuntimeError("transient")
        return super().gangs(now)


def test_a_failed_cycle_is_retried_soon_not_after_the_interval(tmp_path: Path) -> None:
    import threading

    pool = Pool(f"sqlite:///{tmp_path / 'pool.db'}", backend=FailingOnceBackend(nodes(2)))
    pool.loop.clock = time.time
    job = pool.submit(env={"SIM_DURATION": 100})
    wake = Wake(Pace(interval=60.0, batch_delay=0.0, min_gap=0.05))
    runner = threading.Thread(target=pool.loop.run, args=(wake,))
    runner.start()
    try:
        deadline = time.monotonic() + 10
        while pool.state(job) is JobState.PENDING and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pool.state(job) is not JobState.PENDING, "the retry waited for the 60 s interval"
    finally:
        wake.stop()
        runner.join(timeout=10)


def test_a_restarted_job_gets_its_whole_time_limit_again(url: str) -> None:
    # A 30 s limit; the node dies 20 s in, and the job runs again elsewhere: its second
    # attempt is timed from its own start (as the simulator times it, and as the core
    # expects it to end), not from the first attempt's, which would fail it 10 s in.
    backend = SimBackend(nodes(2), default_duration=100.0)
    pool = Pool(url, backend=backend)
    job = pool.submit(max_runtime_seconds=30, restart={"backoff_seconds": 0})
    pool.cycle()
    pool.cycle(1)
    assert pool.state(job) is JobState.RUNNING
    pool.clock.t += 20
    (node,) = _nodes_of(pool, job)
    backend.set_health(node, Health.UNHEALTHY, pool.clock())
    pool.cycle(1)
    pool.cycle(1)
    pool.cycle(1)
    assert (pool.job(job).attempt, pool.state(job)) == (1, JobState.RUNNING)
    pool.cycle(15)  # 15 s into the second attempt, 37 s after the first started
    assert pool.state(job) is JobState.RUNNING
    pool.cycle(15)  # 30 s into the second attempt
    row = pool.job(job)
    assert (row.state, row.failure_class) == ("FAILED", "timeout")


def test_a_borrowers_young_job_is_reclaimed_only_after_its_class_min_runtime(url: str) -> None:
    # b borrows the whole pool; a, entitled to it, submits. With a 60 s min runtime for
    # "normal", the loop waits until b's job has run 60 s, then reclaims.
    classes = (PriorityClass(name="normal", value=500, min_runtime_seconds=60),)
    pool = Pool(url, node_list=nodes(1), org_list=orgs(a=8, b=0), priority_classes=classes)
    borrower = pool.submit("b", env={"SIM_DURATION": 1000})
    pool.cycle()
    pool.cycle(1)
    assert pool.state(borrower) is JobState.RUNNING
    owner = pool.submit("a", env={"SIM_DURATION": 10})
    pool.cycle(10)
    pool.cycle(10)
    assert (pool.state(borrower), pool.state(owner)) == (JobState.RUNNING, JobState.PENDING)
    pool.cycle(45)  # 66 s after the borrower's admission
    assert "preempt" in pool.events(borrower)
