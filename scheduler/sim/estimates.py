"""Start estimates in the replay, recorded as a user would have seen them.

The simulation asks ``scheduler.core.forecast`` as the service's loop does: after a
cycle, at most once per ``refresh_s`` of virtual time, for the jobs that still wait for
their first start and have no estimate yet (just submitted), or have only that first one
and have waited ``later_s`` since submission. Runtime ratios are learned as jobs finish
(run time of the finished attempt over its limit, per org), so an estimate only knows
what had happened by then; so is how late jobs started against their estimates
(``Lateness``, from each first start), which stretches the range's end. ``accuracy.py``
compares them with the actual starts.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from scheduler.core.forecast import Budget, Lateness, Runtimes, forecast
from scheduler.sim.record import EstimateRecord, JobRecord
from values.decisions import Decisions
from values.snapshot import Snapshot

if TYPE_CHECKING:
    from scheduler.sim.engine import SimJob

Decide = Callable[[Snapshot, float], Decisions]


@dataclass(frozen=True)
class EstimateConfig:
    budget: Budget = field(default_factory=Budget)
    refresh_s: float = 300.0  # the least virtual time between two forecasts
    # Runtimes: this percentile of the org's learned runtime/limit ratios; None: limits.
    percentile: float | None = 50.0
    high: float | None = 90.0  # the range's percentile; None: no range
    later_s: float = 3600.0  # the second estimate, this long after submission
    min_samples: int = 10  # finished jobs an org needs before its ratios are used
    # The range's end stretched by past lateness (``Lateness``); None: runtimes alone.
    lateness_pad_s: float | None = 600.0


@dataclass
class EstimateStats:
    forecasts: int = 0
    steps: int = 0
    wall_s: float = 0.0
    most_steps: int = 0


class Estimator:
    def __init__(self, config: EstimateConfig, decide: Decide) -> None:
        self.config, self.decide = config, decide
        self.stats = EstimateStats()
        self._ratios: dict[str, list[float]] = {}
        self._last: float | None = None
        pad = config.lateness_pad_s
        self.lateness = None if pad is None or config.high is None else Lateness(config.high, pad)

    def started(self, rec: JobRecord, now: float) -> None:
        """A job's first start: how late it was against the first estimate it was shown
        (as the service's ``Forecaster`` learns it)."""
        first = rec.estimates[0] if rec.estimates else None
        if self.lateness is not None and first is not None and first.start is not None:
            self.lateness.started(first.made_at, first.start, now)

    def learn(self, org: str, ran: float, limit: float | None) -> None:
        """A job of ``org`` finished after running ``ran`` seconds of its ``limit``."""
        if limit is not None and limit > 0:
            bisect.insort(self._ratios.setdefault(org, []), min(1.0, max(ran / limit, 1e-9)))

    def runtimes(self) -> Runtimes:
        p = self.config.percentile
        if p is None:
            return Runtimes()
        least = self.config.min_samples
        return Runtimes({o: r for o, r in self._ratios.items() if len(r) >= least}, p)

    def after_cycle(
        self, snap: Snapshot, now: float, decisions: Decisions, jobs: Mapping[str, SimJob]
    ) -> None:
        cfg = self.config
        if self._last is not None and now - self._last < cfg.refresh_s:
            return
        wanted: dict[str, str] = {}
        for job_id in decisions.pending:
            rec = jobs[job_id].rec
            if rec.first_start is not None:
                continue  # waiting again after a preemption or failure: not measured
            if not rec.estimates:
                wanted[job_id] = "submit"
            elif len(rec.estimates) == 1 and now >= rec.submit + cfg.later_s:
                wanted[job_id] = "later"
        if not wanted:
            return
        self._last = now
        started = time.perf_counter()
        got = forecast(
            snap,
            now,
            budget=cfg.budget,
            runtimes=self.runtimes(),
            high=cfg.high,
            first=decisions,
            wanted=wanted,
            decide=self.decide,
        )
        self.stats.wall_s += time.perf_counter() - started
        self.stats.forecasts += 1
        self.stats.steps += got.steps
        self.stats.most_steps = max(self.stats.most_steps, got.steps)
        for job_id, kind in wanted.items():
            e = got.estimates[job_id]
            if self.lateness is not None:
                e = self.lateness.stretch(e, now)
            basis = None if e.basis is None else e.basis.value
            jobs[job_id].rec.estimates.append(EstimateRecord(kind, now, e.start, basis, e.high))
