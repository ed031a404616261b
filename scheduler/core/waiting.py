"""The waiting side of a cycle: why a job that no action settled waits, the running jobs'
release order that reservations are planned on, and a job waiting on quota blocking its
org's later borrowing jobs from overtaking it.

A mixin of ``Cycle`` (``decide.py``): it works on the cycle's working state.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from quota.accounting import Verdict
from scheduler.core.backfill import Releases, carried_releases, releases_of
from scheduler.core.pool import Fit, Shape
from scheduler.core.state import CycleState
from values.decisions import PendingReason
from values.snapshot import PendingJob, RunningJob

Extra = dict[int, tuple[int, float, float]]
_FAIL = None


class WaitSteps(CycleState):
    def explain_capacity(self, job: PendingJob, f: str, shape: Shape) -> None:
        """Why a job that quota allowed on ``f`` waits for nodes there."""
        reason, blocker = self.capacity_reason(job, f, shape)
        g = job.spec.gang
        size = f"{'its minimum ' if g.elastic else ''}{shape.replicas} x {g.accelerators}"
        messages = {
            PendingReason.TOPOLOGY: f"no single {job.spec.topology.level if job.spec.topology else 'rack'} "
            f"has room for {size} {f}",
            PendingReason.RESERVED_FOR: f"room on {f} is held for {blocker}",
            PendingReason.HEALTH: f"room on {f} exists only on unhealthy, degraded or cordoned nodes",
            PendingReason.CAPACITY: f"no set of {f} nodes has room for {size}",
        }
        est = self.holds[f].start_at if reason is PendingReason.RESERVED_FOR and f in self.holds else None
        self.pend(
            job,
            reason,
            messages[reason],
            blocked_by=blocker,
            estimated_start=None if est is None or math.isinf(est) else est,
        )

    def releases(self, f: str) -> tuple[Releases, Callable[[], list[tuple[float, RunningJob]]]]:
        """Running jobs and this cycle's placements on ``f`` in the order they release
        capacity, less the victims of claims (their room is promised already)."""
        c, placed = self.carried, self.placed_by_flavor.get(f, [])
        if c.by_flavor is not None and c.ends is not None and c.unlimited is not None and f in c.ends:
            return carried_releases(
                c.ends[f],
                c.by_flavor[f],
                c.unlimited[f],
                placed,
                self.victims_of_claims,
                self.stopping,
                self.now,
            )
        running = [
            r for r in self.running_by_flavor.get(f, []) + placed if r.id not in self.victims_of_claims
        ]
        return releases_of(running, self.stopping, self.now)

    def capacity_reason(self, job: PendingJob, f: str, shape: Shape) -> tuple[PendingReason, str | None]:
        fit = self.fit_of(job)
        hold = self.holds.get(f)
        claims = self.claims.get(f, [])
        key = ("why", f, shape, fit, hold.job_id if hold else None, len(claims))
        if key in self.memo:
            return self.memo[key]  # type: ignore[return-value]
        avoid = job.avoid_nodes
        held = self.held_on(f) if claims else {}
        result: tuple[PendingReason, str | None] = (PendingReason.CAPACITY, None)
        if fit.required and self.pool.place(f, shape, Fit(avoid=avoid)) is not None:
            result = (PendingReason.TOPOLOGY, None)
        elif hold is not None and self.pool.place(f, shape, fit, extra=hold.held) is not None:
            result = (PendingReason.RESERVED_FOR, hold.job_id)
        elif claims and self.pool.place(f, shape, fit, extra=held) is not None:
            # Room a preemption beneficiary claims until its victims are gone: no
            # reservation of its own (that is the head gang's), so this is plain capacity.
            result = (PendingReason.CAPACITY, claims[0][0])
        elif self.pool.place(f, shape, fit, ignore_health=True) is not None:
            result = (PendingReason.HEALTH, None)
        self.memo[key] = result
        return result

    def held_on(self, f: str) -> Extra:
        """Everything held on ``f``: the reservation and the preemption beneficiaries."""
        hold = self.holds.get(f)
        parts = ([hold.held] if hold else []) + [c for _, c in self.claims.get(f, [])]
        if len(parts) <= 1:
            return parts[0] if parts else {}
        total: Extra = {}
        for part in parts:
            for i, (a, c, m) in part.items():
                ta, tc, tm = total.get(i, (0, 0.0, 0.0))
                total[i] = (ta + a, tc + c, tm + m)
        return total

    def blocked_in_org(self, job: PendingJob, f: str) -> str | None:
        got = self.blocked.get((job.spec.org, f))
        if got is None:
            return None
        blocker, start = got
        return None if start is not None and self.ends_before(job, start) else blocker

    def block_org(self, job: PendingJob, verdicts: list[tuple[str, Verdict]]) -> None:
        """A job waiting on quota keeps its org's later borrowing jobs from overtaking it."""
        for f, _ in verdicts:
            if (job.spec.org, f) not in self.blocked:
                self.epoch += 1
                self.blocked[(job.spec.org, f)] = (job.id, self.quota_free_at(job, f))

    def quota_free_at(self, job: PendingJob, f: str) -> float | None:
        org, q = job.spec.org, job.spec.gang.least_accelerators
        excess = self.book.over_ceiling(org, f, q)
        holdings = self.carried.holdings
        if holdings is not None:  # (expected end, accelerators) per running job, carried
            stopping, now = self.stopping, self.now
            got = holdings.get((org, f), {})
            ends = sorted(
                (end if i not in stopping else now, acc) for i, (end, acc) in got.items() if end is not None
            )
        else:
            ends = sorted(
                (r.expected_end if r.id not in self.stopping else self.now, r.accelerators)
                for r in self.running_of(org, f)
                if r.expected_end is not None
            )
        for end, acc in ends:
            excess -= acc
            if excess <= 0:
                return max(end, self.now)
        return None

    def running_of(self, org: str, f: str) -> list[RunningJob]:
        """The org's running jobs on ``f``: grouped once per cycle and flavor, on first use
        (an org blocks on quota in most cycles of a busy pool)."""
        groups = self._running_by_org.get(f)
        if groups is None:
            groups = self._running_by_org[f] = {}
            for r in self.running_by_flavor.get(f, []):
                groups.setdefault(r.spec.org, []).append(r)
        return groups.get(org, [])
