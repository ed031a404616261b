"""`trainpool bench loop`: the live control loop's cycle on a large store, phase by phase.

`bench scheduler` times the core on snapshots built in memory; this times what the
service pays: a real store (SQLite or PostgreSQL) holding the running and pending jobs,
the sim backend holding the gangs, and `ControlLoop.cycle` with its named phases
(observe, persist_observation, snapshot, decide, persist_decisions, act, note_pending).
A cold cycle fills the pool; then each steady cycle advances the clock, so the gangs
whose durations ran out exit, and a share of new jobs arrives.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scheduler.backends.sim import SimBackend
from scheduler.bench.philly import gang_shape, sample_gpu_counts
from scheduler.bench.runner import percentile
from scheduler.collector import GcTuning, tune
from scheduler.control.loop import ControlLoop, LoopSettings
from scheduler.store import jobs as jobstore
from scheduler.store import orgs as orgstore
from scheduler.store.db import open_database
from scheduler.store.view import PoolView
from values.domain import Flavor, JobSpec, Node, TopologyPath
from values.lifecycle import JobState
from values.quotas import FlavorQuota, Org

FLAVOR = "h100"
PHASES = (
    "observe",
    "persist_observation",
    "snapshot",
    "decide",
    "persist_decisions",
    "act",
    "forecast",
    "note_pending",
)
SUBMIT_BATCH = 2_000  # submissions per transaction while filling the store


@dataclass(frozen=True)
class LiveOptions:
    running: int = 10_000
    pending: int = 40_000
    orgs: int = 20
    cycles: int = 10
    cycle_s: float = 10.0  # virtual seconds between steady cycles
    churn: float = 0.01  # share of running jobs ending, and of pending jobs arriving, per cycle
    db: str | None = None  # PostgreSQL URL; None: SQLite in a temporary folder
    seed: int = 0


class LiveBench:
    def __init__(self, opts: LiveOptions, progress: Callable[[str], None] = lambda _: None) -> None:
        self.opts, self.progress = opts, progress
        self.rng = np.random.default_rng(opts.seed)
        self.clock = 1_000_000.0
        self.submitted = 0
        # Durations long enough that about opts.churn of the running jobs end each cycle.
        self.mean_duration = opts.cycle_s / opts.churn

    def run(self) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="trainpool-bench-loop-") as tmp:
            url = self.opts.db or f"sqlite:///{Path(tmp) / 'bench.db'}"
            return self._run(url)

    def _run(self, url: str) -> dict[str, Any]:
        o = self.opts
        # Sizes for the first o.running jobs decide the pool: just enough nodes for them.
        sizes = [int(g) for g in sample_gpu_counts(self.rng, o.running + o.pending)]
        nodes = [
            Node(name=f"n{i:05d}", flavor=FLAVOR, accelerators=8, topology=TopologyPath(rack=f"r{i // 32}"))
            for i in range(math.ceil(sum(sizes[: o.running]) / 8))
        ]
        per_org = len(nodes) * 8 // o.orgs
        orgs = tuple(
            Org(name=f"org{i:02d}", quotas={FLAVOR: FlavorQuota(nominal=per_org)}) for i in range(o.orgs)
        )
        db = open_database(url)
        with db.write() as s:
            orgstore.seed_from_config(s, orgs, self.clock)
        backend = SimBackend(nodes, default_duration=self.mean_duration)
        loop = ControlLoop(
            db,
            backend,
            PoolView(flavors=(Flavor(name=FLAVOR),)),
            settings=LoopSettings(holder="bench", lease_ttl=3600.0),
            clock=lambda: self.clock,
        )
        started = time.perf_counter()
        self._submit(db, sizes)
        fill_s = time.perf_counter() - started
        self.progress(f"store filled: {len(sizes):,} jobs on {len(nodes):,} nodes in {fill_s:.1f} s")
        tune(GcTuning())  # as the loop's process does

        cold_started = time.perf_counter()
        loop.cycle()
        cold = dict(loop.phases, total=time.perf_counter() - cold_started)
        self.progress(f"cold cycle: {cold['total']:.1f} s")
        counts = self._counts(db)
        steady: list[dict[str, float]] = []
        for i in range(o.cycles):
            self.clock += o.cycle_s
            self._submit(db, [int(g) for g in sample_gpu_counts(self.rng, int(o.pending * o.churn))])
            began = time.perf_counter()
            loop.cycle()
            steady.append(dict(loop.phases, total=time.perf_counter() - began))
            self.progress(f"steady cycle {i + 1}/{o.cycles}: {steady[-1]['total']:.2f} s "
                          f"(decide {steady[-1]['decide']:.2f} s)")  # fmt: skip
        final = self._counts(db)
        db.dispose()
        return {
            "benchmark": "loop",
            "database": "postgresql" if o.db else "sqlite",
            "nodes": len(nodes),
            "orgs": o.orgs,
            "fill_s": fill_s,
            "after_cold": counts,
            "final": final,
            "cold_cycle_s": cold,
            "steady_p50_s": {p: percentile([c[p] for c in steady], 50) for p in (*PHASES, "total")},
            "steady_max_s": {p: max(c[p] for c in steady) for p in (*PHASES, "total")},
        }

    def _submit(self, db: Any, sizes: list[int]) -> None:
        for start in range(0, len(sizes), SUBMIT_BATCH):
            with db.write() as s:
                for gpus in sizes[start : start + SUBMIT_BATCH]:
                    self.submitted += 1
                    self.clock += 1e-6  # distinct submit times
                    jobstore.submit(s, self._spec(gpus), priority=500, now=self.clock,
                                    submitted_by=None, client_request_id=None)  # fmt: skip

    def _spec(self, gpus: int) -> JobSpec:
        replicas, accelerators = gang_shape(gpus)
        duration = float(self.rng.exponential(self.mean_duration))
        return JobSpec.model_validate({
            "name": f"bench-{self.submitted}",
            "org": f"org{self.submitted % self.opts.orgs:02d}",
            "gang": {"replicas": replicas, "accelerators": accelerators, "flavor": FLAVOR},
            "max_runtime_seconds": max(60.0, 2 * duration),
            "env": {"SIM_DURATION": f"{max(1.0, duration):.1f}"},
        })  # fmt: skip

    @staticmethod
    def _counts(db: Any) -> dict[str, int]:
        with db.read() as s:
            counts = jobstore.counts_by_state(s)
        return {state.value: counts.get(state.value, 0) for state in JobState if counts.get(state.value)}
