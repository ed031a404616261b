"""Tiresias (Gu et al., NSDI'19), discretized two-dimensional least-attained-service.

A job's attained service is accelerators x seconds held so far (both dimensions of
2D-LAS). Jobs sit in priority queues by attained service (``THRESHOLDS``); the first
queue goes first, FIFO by submission within a queue; quotas are ignored (org-blind).
On top of the core's placement (priority order, no backfill), a job that did not fit
preempts running jobs of lower queues, most attained service first, when that makes it
fit. Not modelled: Tiresias' starvation promotion and its placement consolidation
heuristics (the core's topology-aware placement is used instead).
"""

from __future__ import annotations

import bisect
import heapq
from typing import TYPE_CHECKING

from scheduler.decisions import Decisions, PendingReason
from scheduler.sim.policies.base import NORMAL_PRIORITY
from scheduler.snapshot import Ordering, Policy

if TYPE_CHECKING:
    from scheduler.sim.engine import SimJob, Simulation

# Queue boundaries in accelerator-seconds: < 1 GPU-hour, < 100 GPU-hours, the rest.
THRESHOLDS = (3_600.0, 360_000.0)
MAX_PREEMPTORS_PER_CYCLE = 16


class Tiresias:
    name = "tiresias"
    dynamic_priority = True
    core = Policy(
        ordering=Ordering.PRIORITY,
        borrowing=True,
        reclaim=False,
        priority_preemption=False,
        backfill=False,
    )
    description = (
        "Tiresias-like discretized 2D-LAS: queues by attained GPU-time (<1 h, <100 h, rest), "
        "FIFO within a queue, org-blind, preempts lower queues for a blocked job"
    )

    def attained(self, job: SimJob, now: float) -> float:
        running = job.acc * (now - job.start) if job.running is not None else 0.0
        return job.attained + running

    def queue(self, job: SimJob, now: float) -> int:
        return bisect.bisect_right(THRESHOLDS, self.attained(job, now))

    def priority(self, job: SimJob, now: float) -> int:
        return NORMAL_PRIORITY - self.queue(job, now)

    def after_decide(self, sim: Simulation, decisions: Decisions, now: float) -> list[tuple[str, str]]:
        waiting = [
            j
            for j in sim.pending.values()
            if j.pending is not None
            and (st := decisions.pending.get(j.id)) is not None
            and st.reason != PendingReason.PREEMPTING
        ]
        if not waiting:
            return []
        # The first few in queue order (nsmallest is sorted(...)[:n], without sorting all).
        first = heapq.nsmallest(
            MAX_PREEMPTORS_PER_CYCLE, waiting, key=lambda j: (self.queue(j, now), j.rec.submit, j.id)
        )
        free = _free_by_node(sim)
        slots: dict[int, int] = {}  # replicas that fit in ``free``, per replica size
        victims_left: list[SimJob] | None = None  # ranked only when a job needs victims
        out: list[tuple[str, str]] = []
        for job in first:
            gang = job.spec.gang
            per = gang.accelerators
            if per == 0:
                continue
            if per not in slots:
                slots[per] = _slots(free, per)
            if slots[per] >= gang.replicas:
                continue  # room exists: it waits for another reason (quota, reservation)
            if victims_left is None:
                attained = {j.id: self.attained(j, now) for j in sim.running.values()}
                victims_left = sorted(
                    (j for j in sim.running.values() if j.running is not None and not j.running.terminating),
                    key=lambda j: (-bisect.bisect_right(THRESHOLDS, attained[j.id]), -attained[j.id], j.id),
                )
            chosen = self._victims(job, victims_left, free, now)
            if chosen:
                slots.clear()  # ``free`` changed
            for victim in chosen:
                victims_left.remove(victim)
                out.append((victim.id, job.id))
        return out

    def _victims(
        self, job: SimJob, candidates: list[SimJob], free: dict[str, int], now: float
    ) -> list[SimJob]:
        """Lower-queue victims, greedily, until ``job`` fits; none if it never does."""
        gang = job.spec.gang
        per, need = gang.accelerators, gang.replicas
        if per == 0 or _slots(free, per) >= need:
            return []  # room exists: it waits for another reason (quota, reservation)
        my_queue = self.queue(job, now)
        avoid = job.pending.preempted_by if job.pending is not None else None
        trial = dict(free)
        slots = _slots(trial, per)
        chosen: list[SimJob] = []
        for victim in candidates:  # lowest queue first, so the first eligible ones are the best
            if self.queue(victim, now) <= my_queue:
                break
            if victim.id == avoid or victim.running is None:
                continue
            for node, n in victim.running.assignments:
                before = trial[node]
                trial[node] = before + n * victim.spec.gang.accelerators
                slots += trial[node] // per - before // per
            chosen.append(victim)
            if slots >= need:
                free.update(trial)
                return chosen
        return []

    def next_wakeup(self, sim: Simulation, now: float) -> float | None:
        """When the next running job drops a queue, if anyone is waiting to benefit."""
        if not sim.pending:
            return None
        best: float | None = None
        for job in sim.running.values():
            attained = self.attained(job, now)
            i = bisect.bisect_right(THRESHOLDS, attained)
            if i < len(THRESHOLDS) and job.acc:
                t = now + (THRESHOLDS[i] - attained) / job.acc
                best = t if best is None else min(best, t)
        return best


def _free_by_node(sim: Simulation) -> dict[str, int]:
    free = {n.name: n.accelerators for n in sim.pool.nodes if n.flavor == sim.pool.flavor}
    for job in sim.running.values():
        if job.running is None:
            continue
        for node, n in job.running.assignments:
            if node in free:
                free[node] -= n * job.spec.gang.accelerators
    return free


def _slots(free: dict[str, int], per_replica: int) -> int:
    """Replicas of ``per_replica`` accelerators that fit in ``free``, node by node."""
    return sum(room // per_replica for room in free.values())
