"""Start estimates for the live pool: the core's forward replay
(``scheduler/core/forecast.py``), run by the loop within a budget and stored with the
pending reasons (``persist.note_pending``).

Not every cycle: a forecast runs when none is older than ``refresh_s``, or when the
running or pending set changed and the last one is at least ``min_gap_s`` old. Between
forecasts each pending job keeps the estimate it was given (a job that arrived since has
the core's own, where it has one). A forecast's steps follow from what the last one cost,
so that one takes about ``budget_s`` of wall time: a large pool gets coarser estimates,
not a slower loop. An estimate that moved by less than ``max(60 s, 5% of its lead)`` is
kept as it was, so the store is not rewritten for every pending job at every forecast.

The range's end is stretched by how late jobs started against the first estimate they
were given (``Lateness``, learned in memory from the starts this loop saw; a new leader
learns again): the replay assumes no arrivals, and overtaken jobs start later than told.

Runtimes: where an org's finished jobs ran less than their limits, the replay lets its
jobs run the ``percentile`` of their runtime/limit ratios (the last attempt's admission
to its release, over the limit, of the org's ``learn_jobs`` latest successful jobs, read
again every ``learn_every_s``); elsewhere, their limits.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlmodel import Session, col, select

from scheduler.core.forecast import Budget, Estimate, Lateness, Runtimes, describe, forecast, learn
from scheduler.store.tables import AllocationRow, JobRow
from values.decisions import Decisions, PendingReason, PendingStatus
from values.lifecycle import JobState
from values.snapshot import Snapshot


@dataclass(frozen=True)
class ForecastSettings:
    enabled: bool = True
    refresh_s: float = 300.0  # no estimate is older than this
    min_gap_s: float = 60.0  # the least time between two forecasts, however much changed
    budget_s: float = 2.0  # wall seconds a forecast should take
    max_steps: int = 64  # decide calls per replay, at most (and at first)
    min_steps: int = 8
    horizon_s: float = 30 * 86_400.0
    resolution_s: float = 60.0
    percentile: float | None = 50.0  # learned runtimes' percentile; None: limits only
    high: float | None = 90.0  # the range's percentile; None: no range
    learn_every_s: float = 3600.0
    learn_jobs: int = 2000
    min_samples: int = 10
    lateness_pad_s: float | None = 600.0  # None: the range from runtimes alone


Learn = Callable[[], Runtimes]


class Forecaster:
    def __init__(
        self,
        settings: ForecastSettings,
        learned: Learn | None = None,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.settings, self._learned, self._timer = settings, learned, timer
        self.estimates: dict[str, Estimate] = {}
        self.steps = settings.max_steps
        self.last_at: float | None = None
        self.last_seconds = 0.0
        self._seen: tuple[frozenset[str], frozenset[str]] | None = None
        self._runtimes = Runtimes()
        self._learned_at: float | None = None
        self._merged: dict[str, tuple[PendingStatus, Estimate, PendingStatus]] = {}
        pad = settings.lateness_pad_s
        self.lateness = None if pad is None or settings.high is None else Lateness(settings.high, pad)
        self._told: dict[str, tuple[float, float]] = {}  # job -> (when, the first estimate)

    def statuses(self, snap: Snapshot, now: float, decisions: Decisions) -> dict[str, PendingStatus]:
        """The cycle's pending statuses with the estimates of the latest forecast."""
        if not self.settings.enabled:
            return decisions.pending
        if self.lateness is not None:
            self._note_starts(snap, now)
        if self._due(snap, now):
            self._forecast(snap, now, decisions)
        out: dict[str, PendingStatus] = {}
        merged, keep = self._merged, {}
        for job_id, status in decisions.pending.items():
            e = self.estimates.get(job_id)
            if e is None or (e.start is not None and e.start < now):
                out[job_id] = status  # new since the forecast, or its estimate has passed
                continue
            got = merged.get(job_id)
            if got is None or got[0] is not status or got[1] is not e:
                got = (status, e, self._merge(status, e))
            keep[job_id] = got
            out[job_id] = got[2]
        self._merged = keep
        return out

    def _note_starts(self, snap: Snapshot, now: float) -> None:
        """Jobs told a start that now run: how late they were (a job that neither waits
        nor runs any more was cancelled, and says nothing)."""
        assert self.lateness is not None
        if not self._told:
            return
        for r in snap.running:
            if (told := self._told.pop(r.id, None)) is not None:
                self.lateness.started(told[0], told[1], now)
        waiting = {j.id for j in snap.pending}
        self._told = {j: t for j, t in self._told.items() if j in waiting}

    def _due(self, snap: Snapshot, now: float) -> bool:
        if self.last_at is None:
            return True
        age = now - self.last_at
        if age >= self.settings.refresh_s:
            return True
        if age < self.settings.min_gap_s:
            return False
        return self._sets(snap) != self._seen

    @staticmethod
    def _sets(snap: Snapshot) -> tuple[frozenset[str], frozenset[str]]:
        return frozenset(r.id for r in snap.running), frozenset(j.id for j in snap.pending)

    def _forecast(self, snap: Snapshot, now: float, decisions: Decisions) -> None:
        s = self.settings
        if self._learned is not None and (
            self._learned_at is None or now - self._learned_at >= s.learn_every_s
        ):
            self._runtimes = self._learned()
            self._learned_at = now
        runtimes = self._runtimes
        replays = 2 if s.high is not None and runtimes.learned else 1
        steps = max(2, self.steps // replays)
        budget = Budget(steps=steps, horizon_s=s.horizon_s, resolution_s=s.resolution_s)
        started = self._timer()
        got = forecast(snap, now, budget=budget, runtimes=runtimes, high=s.high, first=decisions)
        self.last_seconds = self._timer() - started
        self.last_at, self._seen = now, self._sets(snap)
        per_step = self.last_seconds / max(1, got.steps)
        if got.steps >= budget.steps * replays - replays or self.last_seconds > s.budget_s:
            # The budget bound: next time, as many steps as fit its seconds.
            fit = int(s.budget_s / per_step) if per_step > 0 else s.max_steps
            self.steps = min(s.max_steps, max(s.min_steps, fit))
        old, late = self.estimates, self.lateness
        if late is not None:
            for j, e in got.estimates.items():
                if e.start is not None and j not in self._told:
                    self._told[j] = (now, e.start)
        fresh = got.estimates if late is None else {j: late.stretch(e, now) for j, e in got.estimates.items()}
        self.estimates = {j: _steady(old.get(j), e, now) for j, e in fresh.items()}
        self._high = got.high

    def _merge(self, status: PendingStatus, e: Estimate) -> PendingStatus:
        core = status.estimated_start
        if status.reason is PendingReason.RESERVED and e.start == core and e.high is None:
            return status  # the core's reservation at limits: its message says what it rests on
        return PendingStatus(
            status.reason, f"{status.message}; {describe(e, getattr(self, '_high', None))}", e.start,
            status.blocked_by,
        )  # fmt: skip


def _steady(old: Estimate | None, new: Estimate, now: float) -> Estimate:
    """``old`` where ``new`` says nearly the same: an estimate that jitters from one
    forecast to the next would rewrite every pending job's row each time."""
    if old is None or old.start is None or new.start is None or old.basis != new.basis:
        return new
    close = max(60.0, 0.05 * max(0.0, new.start - now))
    if abs(new.start - old.start) >= close:
        return new
    if (old.high is None) != (new.high is None):
        return new
    if old.high is not None and new.high is not None and abs(new.high - old.high) >= close:
        return new
    return old


def learned_runtimes(session: Session, settings: ForecastSettings) -> Runtimes:
    """Runtime/limit ratios of the latest successful jobs, per org (see module doc)."""
    if settings.percentile is None:
        return Runtimes()
    stmt = (
        select(JobRow.org, JobRow.spec, AllocationRow.created_at, AllocationRow.released_at)
        .join(
            AllocationRow,
            (col(AllocationRow.job_id) == JobRow.id) & (AllocationRow.attempt == JobRow.attempt),
        )
        .where(JobRow.state == JobState.SUCCEEDED.value, col(AllocationRow.released_at).is_not(None))
        .order_by(col(JobRow.finished_at).desc())
        .limit(settings.learn_jobs)
    )
    samples = []
    for org, spec, admitted, released in session.exec(stmt):
        limit = json.loads(spec).get("max_runtime_seconds")
        if isinstance(limit, int | float) and limit > 0 and released is not None and math.isfinite(released):
            samples.append((org, released - admitted, float(limit)))
    return learn(samples, settings.min_samples, settings.percentile)
