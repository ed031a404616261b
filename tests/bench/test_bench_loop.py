"""bench loop: the live loop's cycle timed phase by phase on a real store."""

from __future__ import annotations

from scheduler.bench.live import PHASES, LiveBench, LiveOptions


def test_a_small_live_run_fills_the_pool_then_times_every_phase_of_each_steady_cycle() -> None:
    opts = LiveOptions(running=200, pending=800, orgs=4, cycles=3)
    r = LiveBench(opts).run()

    started = r["after_cold"].get("RUNNING", 0) + r["after_cold"].get("STARTING", 0)
    # The pool is sized for the first 200 jobs; the fair order starts about that many.
    assert 0.75 * opts.running <= started <= 1.5 * opts.running
    arrivals = opts.cycles * int(opts.pending * opts.churn)
    assert sum(r["final"].values()) == opts.running + opts.pending + arrivals  # every job accounted
    assert r["final"].get("SUCCEEDED", 0) > 0  # steady cycles saw jobs end
    for figures in (r["cold_cycle_s"], r["steady_p50_s"], r["steady_max_s"]):
        assert set(figures) == {*PHASES, "total"}
        assert figures["decide"] > 0 and figures["snapshot"] > 0
    cold = r["cold_cycle_s"]
    assert cold["total"] >= sum(cold[p] for p in PHASES)  # one cycle: its phases add up
