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
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
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
from scheduler.collector import GcTuning, tune
from values.decisions import Decisions
from values.snapshot import Policy, Snapshot

Decide = Callable[[Snapshot, float], Decisions]
Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class BenchConfig:
    workload: WorkloadConfig
    repeats: int = 20
    churn: float = 0.01  # share of running jobs that finish, and of --jobs that arrive, per cycle
    cycle_s: float = 10.0  # virtual time between steady cycles
    profile_path: Path | None = None  # cProfile stats of extra steady cycles
    profile_cycles: int = 5
    profile_cold_path: Path | None = None  # cProfile stats of a repeated cold cycle
    # The collector as the loop's process tunes it (what a live cycle pays); None: the
    # interpreter's defaults.
    gc: GcTuning | None = field(default_factory=GcTuning)

    def __post_init__(self) -> None:
        if self.repeats < 1:
            raise ValueError("repeats: at least one steady cycle is needed for its figures")


@dataclass(slots=True)
class CycleTiming:
    snapshot_s: float
    decide_s: float
    # CPU seconds of this process over the cycle: on a shared machine, wall time also
    # counts the time other processes held the cores.
    cpu_s: float

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
        # Other processes on the machine inflate wall times; this says how busy it was.
        "load_average_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def _timed_cycle(
    state: PoolState, decide: Decide, now: float, profiler: cProfile.Profile | None = None
) -> tuple[Decisions, CycleTiming]:
    if profiler is not None:
        profiler.enable()
    c0, t0 = time.process_time(), time.perf_counter()
    snapshot = state.snapshot()
    t1 = time.perf_counter()
    decisions = decide(snapshot, now)
    t2, c2 = time.perf_counter(), time.process_time()
    if profiler is not None:
        profiler.disable()
    return decisions, CycleTiming(snapshot_s=t1 - t0, decide_s=t2 - t1, cpu_s=c2 - c0)


class _Steady:
    """One steady step: churn, then a timed cycle, then apply its decisions."""

    def __init__(self, cfg: BenchConfig, state: PoolState, factory: JobFactory, rng: np.random.Generator):
        self.cfg, self.state, self.factory, self.rng = cfg, state, factory, rng
        self.arrivals = max(1, round(cfg.churn * cfg.workload.jobs))
        self.placed = self.preempted = self.rejected = self.finished = 0
        # What the core decided, by reason: a cycle can be slow because it does much.
        self.place_reasons: Counter[str] = Counter()
        self.preempt_reasons: Counter[str] = Counter()
        self.pending_reasons: Counter[str] = Counter()  # of the last cycle
        self.preempted_jobs: set[str] = set()
        # Victims that had started in the cycle before: many of these means churn.
        self.preempted_young = 0
        # Jobs that had others preempted for them, and what became of them a cycle later.
        self._beneficiaries: set[str] = set()
        self.beneficiaries = 0
        self.beneficiaries_placed_next = 0
        self.beneficiaries_next_reasons: Counter[str] = Counter()

    def step(self, now: float, decide: Decide, profiler: cProfile.Profile | None = None) -> CycleTiming:
        state, cfg = self.state, self.cfg
        state.decay_usage(cfg.cycle_s, state.policy.half_life_seconds)
        self.finished += state.finish(cfg.churn, self.rng)
        state.arrive(self.factory.make(self.arrivals, now - cfg.cycle_s, now))
        decisions, timing = _timed_cycle(state, decide, now, profiler)
        self._tally(decisions, now)
        applied = state.apply(decisions, now)
        self.placed += applied.placed
        self.preempted += applied.preempted
        self.rejected += applied.rejected
        return timing

    def _tally(self, decisions: Decisions, now: float) -> None:
        self.place_reasons.update(p.reason.value for p in decisions.placements)
        self.preempt_reasons.update(p.reason.value for p in decisions.preemptions)
        self.pending_reasons = Counter(s.reason.value for s in decisions.pending.values())
        placed = {p.job_id for p in decisions.placements}
        for job_id in self._beneficiaries:
            if job_id in placed:
                self.beneficiaries_placed_next += 1
            elif job_id in decisions.pending:
                self.beneficiaries_next_reasons[decisions.pending[job_id].reason.value] += 1
        self._beneficiaries = {p.beneficiary for p in decisions.preemptions if p.beneficiary is not None}
        self.beneficiaries += len(self._beneficiaries)
        for p in decisions.preemptions:
            self.preempted_jobs.add(p.job_id)
            victim = self.state.running.get(p.job_id)
            if victim is not None and victim.started_at >= now - self.cfg.cycle_s:
                self.preempted_young += 1


@dataclass(slots=True)
class BenchRun:
    results: dict[str, Any]  # the figures, as `--json` prints them
    state: PoolState  # the pool after the last cycle, for checks


@dataclass(slots=True)
class _Setup:
    state: PoolState
    factory: JobFactory
    rng: np.random.Generator
    capacity: int
    now: float
    seconds: float


def _setup(w: WorkloadConfig) -> _Setup:
    """The pool, orgs and queue of ``w``; the same seed gives the same workload."""
    t0 = time.perf_counter()
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
    return _Setup(state, factory, rng, sum(cap.values()), horizon + 60.0, time.perf_counter() - t0)


def _cold(setup: _Setup, decide: Decide, progress: Progress) -> dict[str, Any]:
    state, now = setup.state, setup.now
    decisions, cold = _timed_cycle(state, decide, now)
    placed = len(decisions.placements)
    applied = state.apply(decisions, now)
    progress(
        f"cold cycle: placed {placed:,} gangs in {cold.total_s:.3f} s "
        f"({placed / cold.total_s:,.0f} gangs/s); {len(state.pending):,} still pending"
    )
    return {
        "cold_cycle_s": cold.total_s,
        "cold_snapshot_s": cold.snapshot_s,
        "cold_decide_s": cold.decide_s,
        "cold_cpu_s": cold.cpu_s,
        "cold_placed": placed,
        "cold_gangs_per_s": placed / cold.total_s if cold.total_s > 0 else 0.0,
        "cold_rejected": applied.rejected,
        "cold_utilization": state.used_accelerators() / setup.capacity if setup.capacity else 0.0,
        "pending_after_cold": len(state.pending),
    }


def _steady_figures(timings: list[CycleTiming], steady: _Steady) -> dict[str, Any]:
    totals = [t.total_s for t in timings]
    return {
        "steady_cycles": len(totals),
        "steady_cycle_p50_s": percentile(totals, 50),
        "steady_cycle_p99_s": percentile(totals, 99),
        "steady_cycle_max_s": max(totals),
        # Nearest rank: with fewer than 100 cycles, p99 is the slowest one.
        "steady_p99_is_max": len(totals) < 100,
        "steady_snapshot_p50_s": percentile([t.snapshot_s for t in timings], 50),
        "steady_decide_p50_s": percentile([t.decide_s for t in timings], 50),
        "steady_cpu_p50_s": percentile([t.cpu_s for t in timings], 50),
        "steady_cpu_p99_s": percentile([t.cpu_s for t in timings], 99),
        "steady_arrivals_per_cycle": steady.arrivals,
        "steady_finished_total": steady.finished,
        "steady_placed_total": steady.placed,
        "steady_preempted_total": steady.preempted,
        "steady_rejected_total": steady.rejected,
        "steady_place_reasons": dict(steady.place_reasons),
        "steady_preempt_reasons": dict(steady.preempt_reasons),
        "steady_preempted_distinct_jobs": len(steady.preempted_jobs),
        "steady_preempted_started_previous_cycle": steady.preempted_young,
        "pending_reasons_last_cycle": dict(steady.pending_reasons),
        "steady_beneficiaries": {
            "jobs": steady.beneficiaries,
            "placed_next_cycle": steady.beneficiaries_placed_next,
            "pending_next_cycle_by_reason": dict(steady.beneficiaries_next_reasons),
        },
    }


def _final_figures(setup: _Setup) -> dict[str, Any]:
    state = setup.state
    over = state.nodes_over_capacity()
    return {
        "running_final": len(state.running),
        "pending_final": len(state.pending),
        "utilization_final": state.used_accelerators() / setup.capacity if setup.capacity else 0.0,
        "nodes_over_capacity": len(over),
        "invariant_violations": state.violation_count + len(over),
        "invariant_examples": state.violations[:10] + [f"node {n} over capacity" for n in over[:10]],
    }


def _profile_steady(
    cfg: BenchConfig, steady: _Steady, now: float, decide: Decide, progress: Progress
) -> None:
    assert cfg.profile_path is not None
    profiler = cProfile.Profile()
    for i in range(cfg.profile_cycles):
        now += cfg.cycle_s
        steady.step(now, decide, profiler)
        progress(f"profiled steady cycle {i + 1}/{cfg.profile_cycles}")
    profiler.dump_stats(str(cfg.profile_path))
    progress(f"profile of the steady cycles written to {cfg.profile_path}")


def _profile_cold(cfg: BenchConfig, decide: Decide, progress: Progress) -> None:
    """Regenerates the same workload from the seed and profiles its cold cycle alone."""
    assert cfg.profile_cold_path is not None
    setup = _setup(cfg.workload)
    profiler = cProfile.Profile()
    _timed_cycle(setup.state, decide, setup.now, profiler)
    profiler.dump_stats(str(cfg.profile_cold_path))
    progress(f"profile of the cold cycle written to {cfg.profile_cold_path}")


def run_benchmark(cfg: BenchConfig, decide: Decide, progress: Progress) -> BenchRun:
    thresholds = gc.get_threshold()
    try:
        return _run(cfg, decide, progress)
    finally:  # the caller's collector as it was (tests run the benchmark in-process)
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _run(cfg: BenchConfig, decide: Decide, progress: Progress) -> BenchRun:
    w = cfg.workload
    rss_start = peak_rss_mb()
    load_start = machine_facts()["load_average_1m"]
    setup = _setup(w)
    progress(
        f"setup: {len(setup.state.nodes):,} nodes, {w.jobs:,} jobs, {w.orgs} orgs in {setup.seconds:.2f} s"
    )
    if cfg.gc is not None:
        tune(cfg.gc)  # as the loop's process does once it has built what it keeps
    gc_before = gc.get_stats()[2]["collections"]
    cold = _cold(setup, decide, progress)

    steady = _Steady(cfg, setup.state, setup.factory, setup.rng)
    timings: list[CycleTiming] = []
    now = setup.now
    for i in range(cfg.repeats):
        now += cfg.cycle_s
        timings.append(steady.step(now, decide))
        progress(f"steady cycle {i + 1}/{cfg.repeats}: {timings[-1].total_s:.3f} s")
    gc_timed = gc.get_stats()[2]["collections"] - gc_before
    steady_figures = _steady_figures(timings, steady)
    # Checked and measured before any profiling: the profiled cycles are extra.
    final = _final_figures(setup)
    peak_rss = peak_rss_mb()

    if cfg.profile_path is not None:
        _profile_steady(cfg, steady, now, decide, progress)
    if cfg.profile_cold_path is not None:
        _profile_cold(cfg, decide, progress)

    results = {
        "benchmark": "scheduler",
        "command": None,  # filled in by the CLI, which knows the command line
        "params": {
            **asdict(w),
            "repeats": cfg.repeats,
            "churn": cfg.churn,
            "cycle_s": cfg.cycle_s,
            "flavors": [f.name for f in FLAVORS],
            "accelerators": setup.capacity,
            "rack_nodes": RACK_NODES,
            "spine_racks": SPINE_RACKS,
        },
        "machine": {**machine_facts(), "load_average_1m_at_start": load_start},
        "setup_s": setup.seconds,
        **cold,
        **steady_figures,
        "gc": "server" if cfg.gc is not None else "default",
        "gc_gen2_collections": gc_timed,
        **final,
        "rss_at_start_mb": rss_start,
        "peak_rss_mb": peak_rss,
        "profile": str(cfg.profile_path) if cfg.profile_path is not None else None,
        "profile_cold": str(cfg.profile_cold_path) if cfg.profile_cold_path is not None else None,
    }
    return BenchRun(results=results, state=setup.state)
