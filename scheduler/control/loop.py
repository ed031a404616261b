"""The control loop. A cycle runs named phases, in this order:

1. **observe** (``observe.py``): the backend's nodes and gangs, read once;
2. **persist** what was observed (``persist.persist_observation``): one transaction;
3. **snapshot** (``store/view.py``) and **decide** (the pure core);
4. **persist** the decisions (``persist.persist_decisions``): one transaction;
5. **act** (``act.py``): the backend launches, stops and forgets, once;
6. **forecast** (``forecasting.py``): every pending job's estimated start, from the core's
   forward replay, refreshed within a budget, not every cycle;
7. the pending jobs' reasons and estimates are noted (short transactions, so the API is
   not held).

Only the holder of the leader lease runs a cycle; the others keep trying to take the
lease, so one of them takes over within ``lease_ttl`` when the leader dies. A cycle is
level-triggered: it compares the store with what the backend runs now, so the first
cycle after a crash repairs whatever the crash interrupted. The clock is injected.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from scheduler.backends.base import Backend
from scheduler.control.act import act
from scheduler.control.fence import Fence, NotLeader
from scheduler.control.forecasting import Forecaster, ForecastSettings, learned_runtimes
from scheduler.control.observe import observe
from scheduler.control.outcome import Actions, ApplyOptions, Outcome
from scheduler.control.persist import note_pending, persist_decisions, persist_observation
from scheduler.control.wake import Pace, Wake
from scheduler.core.forecast import Runtimes
from scheduler.metrics import Metrics, set_all
from scheduler.store import goodput as goodputstore
from scheduler.store import lease
from scheduler.store import nodes as nodestore
from scheduler.store.db import Database
from scheduler.store.view import LiveCache, PoolView, build
from values.decisions import Decisions
from values.snapshot import Snapshot

log = logging.getLogger(__name__)

GOODPUT_WINDOW = 86_400.0  # trainpool_job_effective_time_ratio looks back this far

Decide = Callable[[Snapshot, float], Decisions]


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass
class LoopSettings:
    pace: Pace = field(default_factory=Pace)
    lease_ttl: float = 10.0
    holder: str = field(default_factory=default_holder)
    apply: ApplyOptions = field(default_factory=ApplyOptions)
    forecast: ForecastSettings = field(default_factory=ForecastSettings)


class Ticker:
    """Records into ``phases`` the seconds since the last tick under each phase's name."""

    def __init__(self, phases: dict[str, float]) -> None:
        self.phases, self.last = phases, time.perf_counter()

    def __call__(self, phase: str) -> None:
        now = time.perf_counter()
        self.phases[phase], self.last = now - self.last, now


class ControlLoop:
    def __init__(
        self,
        db: Database,
        backend: Backend,
        pool: PoolView,
        *,
        settings: LoopSettings | None = None,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
        decide: Decide | None = None,
    ) -> None:
        self.db = db
        self.backend = backend
        self.pool = pool
        self.settings = settings or LoopSettings()
        self.clock = clock
        self.metrics = metrics
        self._decide = decide
        self.epoch: int | None = None
        self._live = LiveCache()
        self.cycles = 0
        self.last_cycle_at: float | None = None
        # Seconds each phase of the last cycle took, by name (the bench and the metric).
        self.phases: dict[str, float] = {}
        self.forecaster = Forecaster(self.settings.forecast, self._learned_runtimes)

    @property
    def is_leader(self) -> bool:
        return self.epoch is not None

    def decide(self, snapshot: Snapshot, now: float) -> Decisions:
        if self._decide is None:
            from scheduler.core import decide  # the pure core; imported late to keep startup light

            self._decide = decide
        return self._decide(snapshot, now)

    def _learned_runtimes(self) -> Runtimes:
        with self.db.read() as s:
            return learned_runtimes(s, self.settings.forecast)

    def cycle(self) -> Outcome | None:
        """One cycle; None when another process holds the lease."""
        started = time.perf_counter()
        now = self.clock()
        with self.db.write() as s:
            self.epoch = lease.acquire(s, self.settings.holder, now, self.settings.lease_ttl)
        if self.metrics is not None:
            self.metrics.leader.set(1 if self.epoch is not None else 0)
        if self.epoch is None:
            return None
        fence = Fence(self.settings.holder, self.epoch)
        out = Outcome()
        acts, opts = Actions(), self.settings.apply
        phases = self.phases = {}
        tick = Ticker(phases)
        try:
            seen = observe(self.backend, now)
            tick("observe")
            persist_observation(self.db, seen, fence, out, acts, opts, self._live.specs)
            tick("persist_observation")
            with self.db.read() as s:
                view = build(s, self.pool, now, self._live)
            tick("snapshot")
            decisions = self.decide(view.snapshot, now)
            tick("decide")
            persist_decisions(self.db, view, decisions, fence, now, out, acts, self._live.specs)
            tick("persist_decisions")
            act(self.db, self.backend, fence, acts, now, out, self._live.specs, opts.checkpoint_root)
            tick("act")
            pending = self.forecaster.statuses(view.snapshot, now, decisions)
            tick("forecast")
            note_pending(self.db, view, replace(decisions, pending=pending), fence, now)
            tick("note_pending")
        except NotLeader:
            log.warning("lost the leader lease during a cycle; stepping down")
            self.epoch = None
            return None
        self.cycles += 1
        self.last_cycle_at = now
        if self.metrics is not None:
            for phase, seconds in phases.items():
                self.metrics.phase_seconds.labels(phase).observe(seconds)
            self._observe(view.snapshot, out, time.perf_counter() - started)
            reasons = Counter((status.reason.value,) for status in decisions.pending.values())
            set_all(self.metrics.pending_by_reason, reasons)
        return out

    def _observe(self, snap: Snapshot, out: Outcome, seconds: float) -> None:
        assert self.metrics is not None
        org_of = {j.id: j.spec.org for j in snap.pending} | {j.id: j.spec.org for j in snap.running}
        self.metrics.observe_snapshot(snap)
        self.metrics.observe_interruptions(out.lost, out.recovered)
        self.metrics.quarantines.inc(len(out.quarantined))
        # Cordons change rarely: look after a quarantine, and every 30 cycles for uncordons.
        if out.quarantined or self.cycles % 30 == 1:
            with self.db.read() as s:
                self.metrics.quarantined.set(len(nodestore.quarantined(s)))
        if self.cycles % 30 == 1:  # a day's ratio moves slowly
            now = self.clock()
            with self.db.read() as s:
                spent = goodputstore.by_org(s, [o.name for o in snap.orgs], now - GOODPUT_WINDOW, now, now)
            set_all(self.metrics.effective_time_ratio,
                    {(org, ): g.ratio for org, g in spent.items() if g.ratio is not None})  # fmt: skip
        self.metrics.observe_cycle(
            seconds,
            [(org_of.get(job, "unknown"), wait) for job, wait in out.started],
            [(org_of.get(job, "unknown"), reason) for job, reason in out.preempted],
            out.restarted,
            [(org_of.get(job, "unknown"), direction) for job, direction in out.resized],
            out.verdicts,
            out.validations,
        )

    def run(self, wake: Wake) -> None:
        """Cycle when woken and at least every ``pace.interval`` (``scheduler.control.wake``)
        until ``wake`` is stopped; a failing cycle is logged, not fatal."""
        failures = 0
        while not wake.stopped:
            expected: float | None = None
            try:
                self.cycle()
                failures = 0
            except Exception:
                # Retried soon, backing off to the interval: with a long interval, a cycle
                # that failed once (a locked database) must not leave exits unseen for it.
                failures += 1
                retry = min(wake.pace.interval, wake.pace.min_gap * 2**failures)
                log.exception("control-loop cycle failed; retrying in %.2fs", retry)
                expected = time.monotonic() + retry
            if expected is None:  # a failed cycle keeps its backoff: a change may already be due
                expected = self._expected_change()
            if not wake.wait(time.monotonic(), expected):
                break
        if self.epoch is not None:
            # Hand over at once instead of making a follower wait out the lease.
            try:
                with self.db.write() as s:
                    lease.release(s, self.settings.holder)
            except Exception:
                log.exception("could not release the leader lease")
            self.epoch = None

    def _expected_change(self) -> float | None:
        """When the backend expects its next change (a gang's exit it can foresee), on
        the monotonic clock, so the loop need not wait for the interval to see it. An
        optional ``next_change_at(now) -> float | None`` of the backend, on the loop's
        clock (the sim backend foresees every exit; Ray, a held exit's decision).

        Asked for the first change after the last cycle's observation, not after now: an
        exit due while that cycle ran is not seen yet, and is due at once."""
        hook = getattr(self.backend, "next_change_at", None)
        if hook is None or not self.is_leader:
            return None
        try:
            now = self.clock()
            at = hook(self.last_cycle_at if self.last_cycle_at is not None else now)
        except Exception:
            log.exception("the backend's next_change_at failed; polling at the interval")
            return None
        return None if at is None else time.monotonic() + (float(at) - now)
