"""Runs the scheduler benchmark: one cold cycle, then steady cycles under 1% churn.

A timed cycle is what the live loop pays each time: building the ``Snapshot`` from the
current running and pending lists, then ``decide``. Generating the workload, applying
decisions, finishing and submitting jobs are the store's and backends' work and are
timed apart (setup) or not at all.
"""

from __future__ import annotations

import cProfile
import gc
import math
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scheduler.bench.state import PoolState
from scheduler.bench.workload import (
    FLAVORS,
    MEAN_INTERARRIVAL_S,
    RACK_NODES,
    SPINE_RACKS,
    JobFactory,
    WorkloadConfig,
    build_nodes,
    build_orgs,
    capacity_by_flavor,
    initial_usage,
)
from scheduler.decisions import Decisions
from scheduler.snapshot import Policy, Snapshot

Decide = Callable[[Snapshot, float], Decisions]
Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class BenchConfig:
    workload: WorkloadConfig
    repeats: int = 20
    churn: float = 0.01  # share of running jobs that finish, and of --jobs that arrive, per cycle
    cycle_s: float = 10.0  # virtual time between steady cycles
    profile_path: Path | None = None
    profile_cycles: int = 5


@dataclass(slots=True)
class CycleTiming:
    snapshot_s: float
    decide_s: float

    @property
    def total_s(self) -> float:
        return self.snapshot_s + self.decide_s


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: with fewer than 100 values, p99 is the maximum."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def peak_rss_mb() -> float:
    """Peak resident set of this process, MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / (1024 * 1024) if sys.platform == "darwin" else maxrss / 1024


def machine_facts() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
    }


def _timed_cycle(
    state: PoolState, decide: Decide, now: float, profiler: cProfile.Profile | None = None
) -> tuple[Decisions, CycleTiming]:
    if profiler is not None:
        profiler.enable()
    t0 = time.perf_counter()
    snapshot = state.snapshot()
    t1 = time.perf_counter()
    decisions = decide(snapshot, now)
    t2 = time.perf_counter()
    if profiler is not None:
        profiler.disable()
    return decisions, CycleTiming(snapshot_s=t1 - t0, decide_s=t2 - t1)


class _Steady:
    """One steady step: churn, then a timed cycle, then apply its decisions."""

    def __init__(self, cfg: BenchConfig, state: PoolState, factory: JobFactory, rng: np.random.Generator):
        self.cfg, self.state, self.factory, self.rng = cfg, state, factory, rng
        self.arrivals = max(1, round(cfg.churn * cfg.workload.jobs))
        self.placed = self.preempted = self.rejected = self.finished = 0

    def step(self, now: float, decide: Decide, profiler: cProfile.Profile | None = None) -> CycleTiming:
        state, cfg = self.state, self.cfg
        state.decay_usage(cfg.cycle_s, state.policy.half_life_seconds)
        self.finished += state.finish(cfg.churn, self.rng)
        state.arrive(self.factory.make(self.arrivals, now - cfg.cycle_s, now))
        decisions, timing = _timed_cycle(state, decide, now, profiler)
        applied = state.apply(decisions, now)
        self.placed += applied.placed
        self.preempted += applied.preempted
        self.rejected += applied.rejected
        return timing


@dataclass(slots=True)
class BenchRun:
    results: dict[str, Any]  # the figures, as `--json` prints them
    state: PoolState  # the pool after the last cycle, for checks


def run_benchmark(cfg: BenchConfig, decide: Decide, progress: Progress) -> BenchRun:
    w = cfg.workload
    rss_start = peak_rss_mb()
    t_setup = time.perf_counter()
    rng = np.random.default_rng(w.seed)
    nodes = build_nodes(w, rng)
    cap = capacity_by_flavor(nodes)
    orgs = build_orgs(w, cap, rng)
    policy = Policy()
    state = PoolState(
        flavors=FLAVORS,
        nodes=nodes,
        orgs=orgs,
        usage=initial_usage(orgs, cap, policy.half_life_seconds, rng),
        policy=policy,
    )
    factory = JobFactory(orgs, rng)
    horizon = w.jobs * MEAN_INTERARRIVAL_S
    state.arrive(factory.make(w.jobs, 0.0, horizon))
    now = horizon + 60.0
    setup_s = time.perf_counter() - t_setup
    progress(f"setup: {len(nodes):,} nodes, {w.jobs:,} jobs, {w.orgs} orgs in {setup_s:.2f} s")

    gc_before = gc.get_stats()[2]["collections"]
    decisions, cold = _timed_cycle(state, decide, now)
    cold_placed = len(decisions.placements)
    applied = state.apply(decisions, now)
    cold_used = state.used_accelerators()
    pending_after_cold = len(state.pending)
    progress(
        f"cold cycle: placed {cold_placed:,} gangs in {cold.total_s:.3f} s "
        f"({cold_placed / cold.total_s:,.0f} gangs/s); {pending_after_cold:,} still pending"
    )

    steady = _Steady(cfg, state, factory, rng)
    timings: list[CycleTiming] = []
    for i in range(cfg.repeats):
        now += cfg.cycle_s
        timings.append(steady.step(now, decide))
        progress(f"steady cycle {i + 1}/{cfg.repeats}: {timings[-1].total_s:.3f} s")
    gc_steady = gc.get_stats()[2]["collections"] - gc_before

    if cfg.profile_path is not None and cfg.profile_cycles > 0:
        profiler = cProfile.Profile()
        for i in range(cfg.profile_cycles):
            now += cfg.cycle_s
            steady.step(now, decide, profiler)
            progress(f"profiled cycle {i + 1}/{cfg.profile_cycles}")
        profiler.dump_stats(str(cfg.profile_path))
        progress(f"profile of the steady cycles written to {cfg.profile_path}")

    totals = [t.total_s for t in timings]
    over = state.nodes_over_capacity()
    total_cap = sum(cap.values())
    results = {
        "benchmark": "scheduler",
        "command": None,  # filled in by the CLI, which knows the command line
        "params": {
            **asdict(w),
            "repeats": cfg.repeats,
            "churn": cfg.churn,
            "cycle_s": cfg.cycle_s,
            "flavors": [f.name for f in FLAVORS],
            "accelerators": total_cap,
            "rack_nodes": RACK_NODES,
            "spine_racks": SPINE_RACKS,
        },
        "machine": machine_facts(),
        "setup_s": setup_s,
        "cold_cycle_s": cold.total_s,
        "cold_snapshot_s": cold.snapshot_s,
        "cold_decide_s": cold.decide_s,
        "cold_placed": cold_placed,
        "cold_gangs_per_s": cold_placed / cold.total_s if cold.total_s > 0 else 0.0,
        "cold_rejected": applied.rejected,
        "cold_utilization": cold_used / total_cap if total_cap else 0.0,
        "pending_after_cold": pending_after_cold,
        "steady_cycles": len(totals),
        "steady_cycle_p50_s": percentile(totals, 50) if totals else None,
        "steady_cycle_p99_s": percentile(totals, 99) if totals else None,
        "steady_cycle_max_s": max(totals) if totals else None,
        "steady_p99_is_max": len(totals) < 100,
        "steady_snapshot_p50_s": percentile([t.snapshot_s for t in timings], 50) if totals else None,
        "steady_decide_p50_s": percentile([t.decide_s for t in timings], 50) if totals else None,
        "steady_arrivals_per_cycle": steady.arrivals,
        "steady_finished_total": steady.finished,
        "steady_placed_total": steady.placed,
        "steady_preempted_total": steady.preempted,
        "steady_rejected_total": steady.rejected,
        "gc_gen2_collections": gc_steady,
        "running_final": len(state.running),
        "pending_final": len(state.pending),
        "utilization_final": state.used_accelerators() / total_cap if total_cap else 0.0,
        "nodes_over_capacity": len(over),
        "invariant_violations": state.violation_count + len(over),
        "invariant_examples": state.violations[:10] + [f"node {n} over capacity" for n in over[:10]],
        "rss_at_start_mb": rss_start,
        "peak_rss_mb": peak_rss_mb(),
        "profile": str(cfg.profile_path) if cfg.profile_path is not None else None,
    }
    return BenchRun(results=results, state=state)
