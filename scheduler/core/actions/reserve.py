"""``reserve``: the first job on a flavor that waits for nodes (capacity, or room inside
one rack) holds the nodes it will start on once enough running jobs end by their limits;
later jobs may use that room only if they end before it starts (EASY backfill, in
``allocate``). One reservation per flavor per cycle; off with ``Policy.backfill``."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from scheduler.core.actions.base import Action, Ask, Outcome
from scheduler.core.backfill import Hold, plan_reservation
from values.decisions import PendingReason, Reservation

if TYPE_CHECKING:
    from scheduler.core.decide import Cycle

_FAIL = None


class Reserve(Action):
    name = "reserve"
    frees_capacity = False

    def attempt(self, cycle: Cycle, ask: Ask) -> Outcome | None:
        f, job, shape = ask.capacity_fail, ask.job, ask.shape
        if f is None or not cycle.policy.backfill or f in cycle.holds:
            return None
        reason, blocker = cycle.capacity_reason(job, f, shape)
        fit = cycle.fit_of(job)
        if (
            reason not in (PendingReason.CAPACITY, PendingReason.TOPOLOGY)
            or blocker is not None  # room claimed by a preemption beneficiary is not reservable
            or ("no-hold", f, shape, fit) in cycle.memo
        ):
            return None
        pool = cycle.pool
        hold = plan_reservation(
            pool, job.id, f, shape, cycle.releases(f), lambda extra: pool.place(f, shape, fit, extra=extra)
        )
        if hold is None:
            cycle.memo[("no-hold", f, shape, fit)] = _FAIL  # it would not fit even then
            return None
        cycle.epoch += 1
        cycle.holds[f] = hold
        start = None if math.isinf(hold.start_at) else hold.start_at
        cycle.out.reservations.append(
            Reservation(job.id, f, tuple(pool.names[i] for i in hold.nodes), hold.start_at)
        )
        cycle.pend(
            job,
            PendingReason.RESERVED,
            f"holds {len(hold.nodes)} {f} node(s) for its start{_basis(cycle, hold)}",
            estimated_start=start,
        )
        return Outcome.WAITING


def _basis(cycle: Cycle, hold: Hold) -> str:
    """What the estimate rests on: the release it waits for last. Runtime limits are upper
    bounds, so the start is at the latest then."""
    last = hold.last_release
    if last is None or math.isinf(hold.start_at):
        return "; it waits for jobs without a runtime limit, so no estimate"
    if last.terminating or last.id in cycle.stopping:
        return f"; at the latest when {last.id} has stopped (its grace period ends)"
    limit = last.spec.max_runtime_seconds
    return f"; at the latest when {last.id} reaches its {limit:g} s runtime limit"
