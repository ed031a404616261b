"""What a forecast costs on the benchmark's pool (``trainpool bench scheduler``'s
workload): its steps against a steady cycle's decide, and the live cycle after it.

A forecast's first step is the loop's own decide (passed in); each later step is a
decide on a virtual snapshot in which more has changed than between two live cycles
(every release of its stretch of time, and the placements they allow), so it costs more
than a steady cycle, but of the same order. The loop sizes its steps from the last
forecast's cost (``control/forecasting.py``); this test measures what one step costs.
``TRAINPOOL_FORECAST_BENCH=nodes,jobs`` runs it at another size (the README's figures:
12500,100000).
"""

from __future__ import annotations

import os
import time

import pytest

from scheduler.bench.runner import BenchConfig, _setup, _Steady
from scheduler.bench.workload import WorkloadConfig
from scheduler.core import decide
from scheduler.core.forecast import Budget, forecast


@pytest.mark.slow
def test_a_forecast_step_costs_a_few_steady_cycles_and_leaves_the_next_cycle_as_cheap() -> None:
    nodes, jobs = (int(x) for x in os.environ.get("TRAINPOOL_FORECAST_BENCH", "1250,10000").split(","))
    cfg = BenchConfig(WorkloadConfig(nodes=nodes, jobs=jobs, orgs=50))
    setup = _setup(cfg.workload)
    state, now = setup.state, setup.now
    state.apply(decide(state.snapshot(), now), now)
    steady = _Steady(cfg, state, setup.factory, setup.rng)
    cycles = []
    for _ in range(3):
        now += cfg.cycle_s
        cycles.append(steady.step(now, decide).decide_s)
    snap = state.snapshot()
    t0 = time.perf_counter()
    first = decide(snap, now)
    live = time.perf_counter() - t0
    results = {}
    for steps in (8, 16):
        t0 = time.perf_counter()
        got = forecast(snap, now, budget=Budget(steps=steps), high=None, first=first)
        results[steps] = (time.perf_counter() - t0, got)
    t0 = time.perf_counter()
    decide(snap, now)  # the live loop's next cycle, its carried state untouched
    after = time.perf_counter() - t0
    per_step = {s: wall / max(1, got.steps - 1) for s, (wall, got) in results.items()}
    known = {s: sum(e.start is not None for e in got.estimates.values()) for s, (_, got) in results.items()}
    print(
        f"\n{nodes} nodes, {jobs} jobs, {len(snap.pending)} pending, {len(snap.running)} running: "
        f"steady decide {min(cycles):.3f} s, live {live:.3f} s, next live {after:.3f} s; "
        + "; ".join(
            f"{s} steps: {wall:.2f} s ({per_step[s]:.3f} s a step, to +{(got.reached - now) / 3600:.1f} h, "
            f"{known[s]} of {len(got.estimates)} known)"
            for s, (wall, got) in results.items()
        )
    )
    assert all(got.steps <= s for s, (_, got) in results.items())
    assert after < 3 * max(cycles) + 0.05  # the live carry was not moved into the future
    assert per_step[16] < 10 * max(cycles) + 0.05
