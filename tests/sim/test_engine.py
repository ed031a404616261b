"""The event loop's mechanics, driven by a scripted decide so every number is by hand:
completions, preemption with grace and checkpoints, node failures and restarts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest

from scheduler.sim import metrics
from scheduler.sim.engine import SimConfig, Simulation, fillable
from scheduler.sim.failures import FailureModel
from scheduler.sim.policies import get_policy
from scheduler.sim.pool import pool_from_quotas
from scheduler.sim.trace import TraceJob
from values.decisions import Decisions, Placement, PlaceReason, Preemption, PreemptReason
from values.restarts import RestartPolicy
from values.snapshot import Snapshot

NO_FAILURES = FailureModel("none", None, checkpoint_interval_s=1000.0, restart_overhead_s=300.0)
CONFIG = SimConfig(interval_s=60.0, grace_s=30.0)


def first_fit(preempt: Callable[[Snapshot], list[Preemption]] = lambda s: []) -> Callable[..., Decisions]:
    """Place pending jobs (by submit time) on the first node with room; preempt as scripted."""

    def decide(snap: Snapshot, now: float) -> Decisions:
        free = {n.name: n.accelerators for n in snap.nodes}
        for r in snap.running:
            for node, k in r.assignments:
                free[node] -= k * r.spec.gang.accelerators
        out = Decisions(preemptions=preempt(snap))
        for job in sorted(snap.pending, key=lambda j: (j.preempted_by is not None, j.submitted_at, j.id)):
            g = job.spec.gang
            nodes = [n for n, room in free.items() if room >= g.accelerators][: g.replicas]
            if len(nodes) == g.replicas and not any(p.beneficiary == job.id for p in out.preemptions):
                for n in nodes:
                    free[n] -= g.accelerators
                assignments = tuple((n, 1) for n in nodes)
                out.placements.append(Placement(job.id, "gpu", assignments, PlaceReason.NOMINAL))
        return out

    return decide


def simulate(
    jobs: list[TraceJob], decide: Callable[..., Decisions], model: FailureModel = NO_FAILURES
) -> Simulation:
    pool = pool_from_quotas({"a": 2}, {"a"}, node_size=8)
    sim = Simulation(pool, jobs, get_policy("trainpool"), model, CONFIG, decide=decide)
    sim.result = sim.run()  # type: ignore[attr-defined]
    return sim


def test_a_job_runs_its_trace_duration_from_its_submission() -> None:
    sim = simulate([TraceJob("1", "a", 100.0, 8, 5000.0)], first_fit())
    rec = sim.jobs["j1"].rec
    assert (rec.first_start, rec.end, rec.held_s) == (100.0, 5100.0, 5000.0)


def test_a_preempted_job_keeps_its_last_checkpoint_loses_the_rest_and_restarts_later() -> None:
    def preempt_a_for_b(snap: Snapshot) -> list[Preemption]:
        running = {r.id: r for r in snap.running}
        waiting_b = any(p.id == "jb" for p in snap.pending)
        if waiting_b and "ja" in running and not running["ja"].terminating:
            return [Preemption("ja", PreemptReason.RECLAIM, "jb")]
        return []

    jobs = [TraceJob("a", "a", 0.0, 16, 5000.0), TraceJob("b", "a", 2500.0, 16, 100.0)]
    sim = simulate(jobs, first_fit(preempt_a_for_b))
    a, b = sim.jobs["ja"].rec, sim.jobs["jb"].rec
    # t=2500: cycle preempts A (checkpoint at 2000); A exits after the 30 s grace at 2530.
    # The next cycle may run one interval after the last: 2560, where B starts; B ends 2660.
    assert (b.first_start, b.end) == (2560.0, 2660.0)
    # A restarts at 2660, pays 300 s of restart overhead, then does its remaining 3000 s.
    assert a.end == 2660.0 + 300.0 + 3000.0
    assert a.preemptions == 1 and a.lost_preemption_acc_s == pytest.approx((2530 - 2000) * 16)
    assert a.held_s == pytest.approx(2530 + 3300)
    assert sim.result.preemptions == {"reclaim": 1}  # type: ignore[attr-defined]


class ScriptedFailures:
    def __init__(self, events: list[tuple[float, int]]) -> None:
        self.events = events

    def next_after(self, t: float) -> tuple[float, int] | None:
        later = [e for e in self.events if e[0] > t]
        return later[0] if later else None


def test_a_node_failure_interrupts_the_jobs_on_it_and_they_resume_from_their_checkpoint() -> None:
    pool = pool_from_quotas({"a": 2}, {"a"}, node_size=8)
    jobs = [TraceJob("1", "a", 0.0, 8, 5000.0), TraceJob("2", "a", 0.0, 8, 5000.0)]
    sim = Simulation(pool, jobs, get_policy("trainpool"), NO_FAILURES, CONFIG, decide=first_fit())
    sim._failures = ScriptedFailures([(3500.0, 0)])  # type: ignore[assignment]
    result = sim.run()
    hit, spared = sim.jobs["j1"].rec, sim.jobs["j2"].rec
    assert spared.end == 5000.0 and spared.failures == 0
    # Kept 3000 s (checkpoint at 3000), lost 500 s x 8; restarted at 3500 (no cycle since 0).
    assert hit.failures == 1 and hit.lost_failure_acc_s == pytest.approx(500 * 8)
    assert hit.end == pytest.approx(3500 + 300 + 2000)
    assert result.node_failures == 1


def test_the_loop_stops_when_nothing_can_move_and_reports_unfinished_jobs() -> None:
    never = first_fit()

    def refuse_big(snap: Snapshot, now: float) -> Decisions:
        return never(replace(snap, pending=tuple(p for p in snap.pending if p.id != "jbig")), now)

    model = FailureModel("mtbf", 50_000.0, 1000.0, 300.0)  # failures keep coming forever
    jobs = [TraceJob("big", "a", 0.0, 16, 10.0), TraceJob("small", "a", 0.0, 1, 10.0)]
    pool = pool_from_quotas({"a": 2}, {"a"}, node_size=8)
    result = Simulation(pool, jobs, get_policy("trainpool"), model, CONFIG, decide=refuse_big).run()
    assert result.unfinished == 1


def test_the_job_a_victim_stopped_for_is_nominated_once_the_victim_has_exited() -> None:
    """The loop's contract with the core: after the victim exits, the beneficiary comes
    back to decide with ``nominated`` set (considered first), until it is placed."""
    seen: list[tuple[float, bool]] = []

    def preempt_a_for_b(snap: Snapshot) -> list[Preemption]:
        running = {r.id: r for r in snap.running}
        b = next((p for p in snap.pending if p.id == "jb"), None)
        if b is not None:
            seen.append((snap_time[0], b.nominated))
        if b is not None and "ja" in running and not running["ja"].terminating:
            return [Preemption("ja", PreemptReason.RECLAIM, "jb")]
        return []

    snap_time = [0.0]
    inner = first_fit(preempt_a_for_b)

    def decide(snap: Snapshot, now: float) -> Decisions:
        snap_time[0] = now
        return inner(snap, now)

    jobs = [TraceJob("a", "a", 0.0, 16, 5000.0), TraceJob("b", "a", 2500.0, 16, 100.0)]
    simulate(jobs, decide)
    # t=2500: jb asks for ja's nodes (not nominated yet); ja exits at 2530; at the next
    # cycle (2560) jb is nominated, and is placed.
    assert seen == [(2500.0, False), (2560.0, True)]


def test_fillable_is_the_most_of_the_room_pending_jobs_fill_together() -> None:
    assert fillable(9, Counter({8: 3, 7: 1})) == 8
    assert fillable(9, Counter({4: 1, 8: 1})) == 8  # the larger one, not the first that fits
    assert fillable(12, Counter({5: 2, 7: 1})) == 12
    assert fillable(100, Counter({3: 1000})) == 99
    assert fillable(3, Counter({4: 2})) == 0


def test_one_reclaim_takes_at_most_two_intervals_when_the_grace_is_shorter() -> None:
    """b (nominal one node) borrows a's node too at t=0; a's job (within its nominal of one node)
    arrives at 10, just after that cycle. The next cycle (60) reclaims b's job, which
    exits at 90; the one after (120, the loop's rate limit) places a's job. Its wait of
    110 s is recorded as owed (8 accelerators from 10 to 120) and stays within
    reclaim_allowance(60, 30) = 120."""

    def reclaim_for_a(snap: Snapshot) -> list[Preemption]:
        a = next((p for p in snap.pending if p.spec.org == "a"), None)
        return [
            Preemption(r.id, PreemptReason.RECLAIM, a.id)
            for r in snap.running
            if a is not None and r.spec.org == "b" and not r.terminating
        ]

    pool = pool_from_quotas({"a": 1, "b": 1}, {"a", "b"}, node_size=8)
    jobs = [TraceJob("b", "b", 0.0, 16, 5000.0), TraceJob("a", "a", 10.0, 8, 100.0)]
    sim = Simulation(
        pool, jobs, get_policy("trainpool"), NO_FAILURES, CONFIG, decide=first_fit(reclaim_for_a)
    )
    result = sim.run()
    assert sim.jobs["ja"].rec.first_start == 120.0
    tl = result.timeline.arrays()
    assert tl.owed is not None and tl.owed[:, tl.orgs.index("a")].max() == 8
    allowance = metrics.reclaim_allowance(CONFIG.interval_s, CONFIG.grace_s)
    waits = metrics.guarantee_waits(tl, result.nominal, result.capacity, allowance)
    assert waits["longest_wait_s"] == 110 and waits["waits_over_allowance"] == 0
    assert metrics.guarantee_violations(tl, allowance)["longest_s"] == 110


def test_a_node_failure_follows_the_jobs_restart_policy_as_the_service_does() -> None:
    # One restart allowed after infrastructure failures: the second lost node ends it.
    pool = pool_from_quotas({"a": 2}, {"a"}, node_size=8)
    sim = Simulation(pool, [TraceJob("1", "a", 0.0, 8, 5000.0)], get_policy("trainpool"), NO_FAILURES, CONFIG,
                     decide=first_fit())  # fmt: skip
    job = sim.jobs["j1"]
    job.spec = job.spec.model_copy(
        update={"restart": RestartPolicy.model_validate({"on": {"infrastructure": 1}})}
    )
    sim._failures = ScriptedFailures([(1500.0, 0), (3500.0, 0)])  # type: ignore[assignment]
    result = sim.run()
    assert (job.rec.failures, job.rec.failed, job.rec.end) == (2, True, None)
    assert result.unfinished == 0 and result.node_failures == 2


def test_a_gang_that_loses_a_node_goes_back_expedited_onto_its_surviving_node_as_in_the_service() -> None:
    # A two-node gang and a one-node job of the same org; the gang loses one node
    # (replaced at once): it is requeued at the head of its org's queue, offered the node
    # it kept, and kept off the one that failed (the service's rule: one owner,
    # ``values.restarts.returning``), and it comes back on the node it kept.
    from scheduler.core import decide

    seen: list[tuple[float, Snapshot, Decisions]] = []

    def recording(snap: Snapshot, now: float) -> Decisions:
        out = decide(snap, now)
        seen.append((now, snap, out))
        return out

    pool = pool_from_quotas({"a": 4}, {"a"}, node_size=8)
    jobs = [TraceJob("1", "a", 0.0, 16, 5000.0), TraceJob("2", "a", 0.0, 8, 9000.0)]
    sim = Simulation(pool, jobs, get_policy("trainpool"), NO_FAILURES, CONFIG, decide=recording)
    sim._failures = ScriptedFailures([(1500.0, 0)])  # type: ignore[assignment]
    sim.run()
    places = [(now, p) for now, _, out in seen for p in out.placements if p.job_id == "j1"]
    (_, first), (at, again) = places
    failed = pool.nodes[0].name
    kept = tuple(n for n, _ in first.assignments if n != failed)
    assert failed in {n for n, _ in first.assignments} and len(kept) == 1
    back = next(p for _, snap, _ in seen for p in snap.pending if p.id == "j1" and p.attempt == 1)
    assert back.expedite and back.prefer_nodes == kept and back.avoid_nodes == frozenset({failed})
    assert at >= 1500.0 and kept[0] in {n for n, _ in again.assignments}
    assert failed not in {n for n, _ in again.assignments}


def test_an_elastic_gang_runs_at_the_rate_of_its_size_and_grows_into_idle_room() -> None:
    # Four nodes; a rigid two-node job holds half the pool for 5,000 s. The elastic gang
    # (4 replicas, at least 2) starts at two at 60 s, at half speed (the linear model),
    # checkpointing every 1,000 s of its own time: 2,000 s of its 10,000 s of work saved
    # when the room frees at 5,000 s. Nobody waits for the room: it grows to four (a
    # restart from the checkpoint: out after the 30 s grace, back at the next cycle,
    # 5,060 s, 300 s overhead) and does the remaining 8,000 s at full speed.
    from scheduler.core import decide

    pool = pool_from_quotas({"a": 4}, {"a"}, node_size=8)
    jobs = [TraceJob("1", "a", 0.0, 16, 5000.0), TraceJob("2", "a", 1.0, 32, 10_000.0)]
    model = FailureModel("none", None, checkpoint_interval_s=1000.0, restart_overhead_s=300.0)
    sim = Simulation(pool, jobs, get_policy("trainpool"), model, CONFIG, decide=decide)
    gang = sim.jobs["j2"]
    gang.spec = gang.spec.model_copy(update={"gang": gang.spec.gang.model_copy(update={"min_replicas": 2})})
    result = sim.run()
    rec = gang.rec
    assert result.resizes == {"grow": 1} and rec.preemptions == 0
    assert rec.first_start == 60.0  # the next cycle after its arrival
    assert rec.end == 5060.0 + 300.0 + 8000.0
    # It held 16 of its 32 accelerators until it stopped to grow.
    assert rec.unheld_acc_s == (5030.0 - 60.0) * 16


@dataclass(frozen=True)
class OneHang(FailureModel):
    """The first attempt's gang hangs 2,500 s of progress in; no other hangs."""

    def first_hang(self, seed: int, job_id: str, attempt: int, nodes: int) -> float | None:
        return 2500.0 if attempt == 0 else None


@pytest.mark.parametrize(("detect", "stopped"), [(600.0, 3100.0), (None, 9700.0)])
def test_a_hung_gang_holds_its_nodes_until_stopped_then_resumes_from_its_checkpoint(
    detect: float | None, stopped: float
) -> None:
    model = OneHang("none", None, checkpoint_interval_s=1000.0, restart_overhead_s=300.0,
                    hang_node_mtbf_s=1.0, hang_detect_s=detect, hang_undetected_s=7200.0)  # fmt: skip
    sim = simulate([TraceJob("1", "a", 0.0, 8, 5000.0)], first_fit(), model)
    rec = sim.jobs["j1"].rec
    # Hung at 2,500 s (checkpoint at 2,000 s): stopped after the hang limit, or 2 h later
    # without detection; back at once, 300 s to restart, then the 3,000 s left.
    assert (rec.hangs, rec.failures, rec.lost_failure_acc_s) == (1, 0, 0.0)
    assert rec.lost_hang_acc_s == pytest.approx((stopped - 2000.0) * 8)
    assert rec.end == pytest.approx(stopped + 300.0 + 3000.0)
    assert rec.held_s == pytest.approx(stopped + 3300.0)


class OneSlow(FailureModel):
    """The first attempt's node turns slow 2,500 s of progress in; no other stragglers."""

    def first_slow(self, seed: int, job_id: str, attempt: int, nodes: int) -> tuple[float, int] | None:
        return (2500.0, 0) if attempt == 0 else None


@pytest.mark.parametrize(("detect", "end", "moves"), [(300.0, 6050.0, 1), (None, 7500.0, 0)])
def test_a_slowed_gang_is_moved_at_break_even_or_runs_slow_to_its_end(
    detect: float | None, end: float, moves: int
) -> None:
    model = OneSlow("none", None, checkpoint_interval_s=1000.0, restart_overhead_s=300.0,
                    slow_node_mtbf_s=1.0, straggler_slowdown=2.0, straggler_detect_s=detect)  # fmt: skip
    sim = simulate([TraceJob("1", "a", 0.0, 8, 5000.0)], first_fit(), model)
    rec = sim.jobs["j1"].rec
    assert (rec.stragglers, rec.failures, rec.hangs) == (moves, 0, 0)
    assert rec.end == pytest.approx(end)
    if detect is None:
        # Half pace from 2,500 s: the 2,500 s of work left take 5,000 s, half of it lost.
        assert rec.lost_straggler_acc_s == pytest.approx(5000.0 * 8 * 0.5)
    else:
        # Judged at 2,800 s, short of break-even until the checkpoint at 4,000 s (progress
        # 3,250 s): lost 1,500 s x 8 x 0.5, the move costs nothing more; back at once,
        # 300 s to restart, then the 1,750 s left.
        assert rec.lost_straggler_acc_s == pytest.approx(1500.0 * 8 * 0.5)
        assert rec.held_s == pytest.approx(4000.0 + 300.0 + 1750.0)


class EveryAttemptHangs(FailureModel):
    def first_hang(self, seed: int, job_id: str, attempt: int, nodes: int) -> float | None:
        return self.hang_undetected_s  # (reused as: seconds of progress into every attempt)


@pytest.mark.parametrize(("hang_at", "completed"), [(1500.0, True), (500.0, False)])
def test_the_hang_limit_counts_hangs_without_a_checkpoint_between(hang_at: float, completed: bool) -> None:
    # Checkpoints every 1,000 s: hung at 1,500 s, each attempt saves 1,000 s of the 5,000
    # (four hangs, past the limit of 3, then done at 4 x 1,560 + 1,000 s); hung at 500 s,
    # none saves: the fourth hang fails it.
    model = EveryAttemptHangs("none", None, checkpoint_interval_s=1000.0, restart_overhead_s=0.0,
                              hang_node_mtbf_s=1.0, hang_detect_s=60.0,
                              hang_undetected_s=hang_at)  # fmt: skip
    rec = simulate([TraceJob("1", "a", 0.0, 8, 5000.0)], first_fit(), model).jobs["j1"].rec
    assert (rec.completed, rec.failed) == (completed, not completed)
    assert rec.hangs == 4
    assert rec.end == (pytest.approx(7240.0) if completed else None)
