"""Start estimates from the forward replay, against timelines worked out by hand.

Each scenario is a small pool at ``now``; the comment over it is the timeline the
estimates must follow (running jobs end at their limits unless runtimes are learned;
nobody new arrives).
"""

from __future__ import annotations

import math

import pytest

from scheduler.core import carried, decide
from scheduler.core.forecast import (
    Basis,
    Budget,
    Estimate,
    Lateness,
    Runtimes,
    describe,
    forecast,
    learn,
    span,
)
from values.decisions import Decisions, PendingReason
from values.snapshot import Policy, Snapshot, WithinOrg

from .scenario import apply, expire, org, pending, quota, rack, running, snapshot
from .test_backfill import fragmented

BY_AGE = Policy(within_org=WithinOrg.AGE)


def chain(policy: Policy = BY_AGE) -> Snapshot:
    """One node. a1 runs until 1000; b (limit 500), c (limit 300), d (limit 300) queue in
    that order: b starts at 1000, c when b ends (1500), d when c ends (1800)."""
    return snapshot(
        rack("r0", 1),
        [org("a", h100=8)],
        [running("a1", on=["r0-n0"], runtime=1000)],
        [
            pending("b", runtime=500, submitted=1),
            pending("c", runtime=300, submitted=2),
            pending("d", runtime=300, submitted=3),
        ],
        policy=policy,
    )


def starts(got: dict[str, Estimate]) -> dict[str, float | None]:
    return {j: e.start for j, e in got.items()}


def test_the_reserved_head_gang_starts_when_its_reservation_says():
    # r1 ends at 1000 and frees the node g reserved: the core's own estimate.
    got = forecast(fragmented(), 100).estimates
    assert got["g"] == Estimate(1000.0, Basis.RESERVATION, "with runtime limits (at the latest)")


def test_a_chain_each_job_starts_when_the_one_before_it_ends():
    got = forecast(chain(), 100).estimates
    assert starts(got) == {"b": 1000.0, "c": 1500.0, "d": 1800.0}
    assert got["b"].basis is Basis.RESERVATION
    assert got["c"].basis is got["d"].basis is Basis.REPLAY


def test_a_job_waiting_on_its_org_quota_starts_when_its_org_releases_it():
    # a may hold 8 (no borrowing); a1 holds them until 2000. The other node stays free.
    snap = snapshot(
        rack("r0", 2),
        [org("a", h100=quota(8, borrow=0)), org("b", h100=8)],
        [running("a1", on=["r0-n0"], runtime=2000)],
        [pending("p", runtime=100)],
    )
    assert decide(snap, 100).pending["p"].reason is PendingReason.QUOTA
    got = forecast(snap, 100).estimates["p"]
    assert (got.start, got.basis) == (2000.0, Basis.QUOTA_RELEASE)


def test_a_restarting_job_starts_when_its_backoff_ends():
    snap = snapshot(rack("r0", 1), [org("a", h100=8)], pending=[pending("p", eligible_at=500)])
    got = forecast(snap, 100).estimates["p"]
    assert (got.start, got.basis) == (500.0, Basis.BACKOFF)


def test_a_reclaim_the_owner_starts_when_the_borrowers_victim_has_stopped():
    # b borrows the only node with a job that has no limit; a owns it. The cycle at 100
    # reclaims; the victim's 30 s grace ends at 130, and a's job starts then.
    snap = snapshot(
        rack("r0", 1),
        [org("a", h100=8), org("b", h100=0)],
        [running("b1", "b", on=["r0-n0"])],
        [pending("p", "a", runtime=1000)],
    )
    assert decide(snap, 100).pending["p"].reason is PendingReason.PREEMPTING
    got = forecast(snap, 100).estimates["p"]
    assert (got.start, got.basis) == (130.0, Basis.REPLAY)


def test_a_chain_of_reclaims_the_second_owner_waits_for_the_first_owners_job():
    # Two nodes, b borrows both with unlimited jobs; a owns one node, c the other, and
    # each reclaims its own at 100: both start at 130. a's second job (after a's first,
    # limit 400) starts when that ends: 530.
    snap = snapshot(
        rack("r0", 2),
        [org("a", h100=8), org("c", h100=8), org("b", h100=0)],
        [running("b1", "b", on=["r0-n0"]), running("b2", "b", on=["r0-n1"])],
        [
            pending("p", "a", runtime=400, submitted=1),
            pending("q", "c", runtime=5000, submitted=2),
            pending("p2", "a", runtime=400, submitted=3),
        ],
    )
    assert starts(forecast(snap, 100).estimates) == {"p": 130.0, "q": 130.0, "p2": 530.0}


def test_what_waits_for_jobs_without_a_limit_has_no_estimate_and_says_why():
    snap = snapshot(
        rack("r0", 1), [org("a", h100=8)], [running("u", on=["r0-n0"])], [pending("p", runtime=100)]
    )
    got = forecast(snap, 100).estimates["p"]
    assert got == Estimate(None, why="it waits for jobs without a runtime limit")
    assert describe(got) == "start unknown: it waits for jobs without a runtime limit"


def test_beyond_the_step_budget_a_start_is_unknown_but_not_before_the_last_step():
    got = forecast(chain(), 100, budget=Budget(steps=2)).estimates
    assert got["b"].start == 1000.0
    assert got["c"].start is None and got["c"].not_before == 1000.0
    assert "2 steps" in got["c"].why


def test_beyond_the_horizon_a_start_is_unknown():
    snap = snapshot(
        rack("r0", 1),
        [org("a", h100=8)],
        [running("a1", on=["r0-n0"], runtime=10 * 86_400)],
        [pending("p", runtime=100)],
    )
    got = forecast(snap, 100, budget=Budget(horizon_s=86_400)).estimates["p"]
    assert got.start is None and "horizon" in got.why


# -- learned runtimes ---------------------------------------------------------------------

# Nine of org a's finished jobs ran half their limit, one all of it: the median is 0.5,
# the 100th percentile 1.0.
HALF = Runtimes({"a": (0.5,) * 9 + (1.0,)}, percentile=50)


def one_running(limit: float = 1000) -> Snapshot:
    return snapshot(
        rack("r0", 1),
        [org("a", h100=8)],
        [running("a1", on=["r0-n0"], runtime=limit)],
        [pending("p", runtime=100)],
    )


def test_learned_runtimes_end_a_job_at_its_orgs_usual_share_of_its_limit_and_the_range_at_its_limit():
    got = forecast(one_running(), 100, runtimes=HALF, high=100).estimates["p"]
    assert (got.start, got.high) == (500.0, 1000.0)
    assert got.why == "at the p50 of its org's runtime/limit"
    assert describe(got, 100) == (
        "estimated start from its reservation, at the p50 of its org's runtime/limit; 8m later at the p100"
    )


def test_a_job_running_longer_than_most_of_its_peers_is_expected_to_run_like_the_longer_ones():
    # At 600 a1 has run 0.6 of its limit, past every job that ran half: only the one that
    # ran its whole limit is like it.
    assert forecast(one_running(), 600, runtimes=HALF).estimates["p"].start == 1000.0


def test_without_learned_ratios_there_is_no_range():
    got = forecast(one_running(), 100, high=90).estimates["p"]
    assert (got.start, got.high) == (1000.0, None)


def test_learn_keeps_orgs_with_enough_finished_jobs_and_caps_ratios_at_one():
    samples = [("a", 50.0, 100.0)] * 9 + [("a", 300.0, 100.0), ("b", 10.0, 100.0)]
    assert learn(samples, min_samples=10) == Runtimes({"a": (0.5,) * 9 + (1.0,)})


# -- the replay is the loop ---------------------------------------------------------------


def test_the_replays_first_step_is_decide_on_the_same_snapshot_and_its_next_step_sees_what_the_loop_would():
    calls: list[tuple[Snapshot, float, Decisions]] = []

    def recording(snap: Snapshot, now: float) -> Decisions:
        d = decide(snap, now)
        calls.append((snap, now, d))
        return d

    snap = chain(Policy())  # the default order: c (shortest) goes before b
    got = forecast(snap, 100, decide=recording)
    first = decide(snap, 100)
    assert calls[0][0] is snap and calls[0][1] == 100 and calls[0][2] == first
    assert set(got.estimates) == set(first.pending)
    # The next step: a1 ends at its limit (1000) and the cycle then sees what the loop's
    # own would: the same running and pending jobs.
    after, _ = expire(apply(snap, first, 100), 1000)
    step2, t2, _ = calls[1]
    assert t2 == 1000
    assert {r.id for r in step2.running} == {r.id for r in after.running}
    assert {j.id for j in step2.pending} == {j.id for j in after.pending}
    assert calls[1][2].placements == decide(after, 1000).placements


def test_a_forecast_leaves_the_threads_carried_state_as_it_found_it():
    snap = chain()
    decide(snap, 100)
    before = getattr(carried._local, "carry", None)
    forecast(snap, 100)
    assert getattr(carried._local, "carry", None) is before


def test_estimates_are_deterministic():
    assert forecast(chain(Policy()), 100) == forecast(chain(Policy()), 100)


@pytest.mark.parametrize("steps", [2, 8, 16, 64, 256])
def test_the_step_spacing_reaches_the_horizon_within_the_budget(steps: int):
    b = Budget(steps=steps, horizon_s=30 * 86_400, resolution_s=60)
    g, lead, n = b.growth(), 0.0, 1
    while lead < b.horizon_s:
        lead += b.step(lead, g)
        n += 1
    assert n <= steps
    assert g == 0.0 or n >= steps - 1  # not coarser than it needs to be


def test_span_words():
    assert [span(s) for s in (59, 2700, 7800, 3 * 86_400 + 4 * 3600)] == ["0m", "45m", "2h 10m", "3d 4h"]
    assert math.isclose(Budget(steps=50_000).growth(), 0.0)


def test_jobs_placed_by_one_step_start_when_the_nodes_they_got_were_freed():
    # Three nodes free at 120, 130 and 150: one step (a loop interval from 100) gathers
    # all three releases and decides at 150, but b, c and d start as their nodes come free.
    snap = snapshot(
        rack("r0", 3),
        [org("a", h100=24)],
        [running(f"a{i}", on=[f"r0-n{i}"], runtime=end) for i, end in enumerate((120, 130, 150))],
        [pending(j, runtime=1000, submitted=i) for i, j in enumerate("bcd")],
        policy=BY_AGE,
    )
    got = forecast(snap, 100)
    assert (got.steps, starts(got.estimates)) == (2, {"b": 120.0, "c": 130.0, "d": 150.0})


# --- lateness: the range's end from how late past jobs started ----------------------------


def test_before_enough_jobs_started_lateness_leaves_the_estimate_alone() -> None:
    late = Lateness(min_samples=3, pad_s=600)
    e = Estimate(10_000.0, Basis.REPLAY, "x", high=12_000.0)
    late.started(0.0, 1000.0, 5000.0)
    late.started(0.0, 1000.0, 5000.0)
    assert late.factor() is None and late.stretch(e, 0.0) is e


def test_the_range_ends_where_the_90th_percentile_of_past_lateness_puts_it() -> None:
    late = Lateness(percentile=90, pad_s=600, min_samples=10)
    # Ten jobs told "in 1,400 s" (2,000 s with the pad): nine on time, one 3x late.
    for _ in range(9):
        late.started(0.0, 1400.0, 1400.0)
    late.started(0.0, 1400.0, 5400.0)
    assert late.factor() == 1.0  # the 90th percentile of ten: the ninth, on time
    late.started(0.0, 1400.0, 5400.0)  # eleven: the 90th is the tenth, 3x
    assert late.factor() == 3.0
    e = Estimate(100_000.0 + 1400.0, Basis.REPLAY, "x", high=None)
    assert late.stretch(e, 100_000.0).high == 100_000.0 + 2000.0 * 3 - 600.0
    # A runtime range already later than that is kept; the end is never before the start.
    wide = Estimate(101_400.0, Basis.REPLAY, "x", high=120_000.0)
    assert late.stretch(wide, 100_000.0).high == 120_000.0
    assert late.stretch(Estimate(None, why="no limit"), 100_000.0).high is None


def test_lateness_learns_only_from_the_latest_window() -> None:
    late = Lateness(percentile=50, pad_s=100, window=4, min_samples=4)
    for _ in range(4):
        late.started(0.0, 100.0, 700.0)  # (700 + 100) / (100 + 100) = 4x
    assert late.factor() == 4.0
    for _ in range(4):
        late.started(0.0, 100.0, 100.0)
    assert late.factor() == 1.0 and late.samples == 4
