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

import heapq
import math
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

from scheduler.sim.policies.base import NORMAL_PRIORITY
from values.decisions import Decisions, PendingReason
from values.snapshot import Ordering, Policy

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

    def __init__(self) -> None:
        self.free_nodes: FreeNodes | None = None  # carried between cycles of one replay

    def attained(self, job: SimJob, now: float) -> float:
        running = job.acc * (now - job.start) if job.running is not None else 0.0
        return job.attained + running

    def queue(self, job: SimJob, now: float) -> int:
        return _queue_of(self.attained(job, now))

    def priority(self, job: SimJob, now: float) -> int:
        # Called for every running job every cycle: written out rather than via queue().
        attained = job.attained + (job.acc * (now - job.start) if job.running is not None else 0.0)
        return NORMAL_PRIORITY - (0 if attained < _FIRST else 1 if attained < _SECOND else 2)

    def after_decide(self, sim: Simulation, decisions: Decisions, now: float) -> list[tuple[str, str]]:
        if self.free_nodes is None or self.free_nodes.sim is not sim:
            self.free_nodes = FreeNodes(sim)
        carried = self.free_nodes.update(p.job_id for p in decisions.placements)
        pending = decisions.pending
        # (queue, submission, id, job) of the jobs still waiting, not for victims: the id
        # is unique, so the job itself is never compared.
        waiting = [
            (
                _queue_of(j.attained + (j.acc * (now - j.start) if j.running is not None else 0.0)),
                j.rec.submit,
                jid,
                j,
            )
            for jid, j in sim.pending.items()
            if j.pending is not None
            and (st := pending.get(jid)) is not None
            and st.reason != PendingReason.PREEMPTING
        ]
        if not waiting:
            return []
        # The first few in queue order (nsmallest is sorted(...)[:n], without sorting all).
        first = [w[3] for w in heapq.nsmallest(MAX_PREEMPTORS_PER_CYCLE, waiting)]
        free = dict(carried)  # this cycle's victims free room in the copy only
        rooms = Counter(free.values())  # nodes by free accelerators: replicas that fit, fast
        slots: dict[int, int] = {}  # replicas that fit in ``free``, per replica size
        victims_left: list[_Candidate] | None = None  # ranked only when a job needs victims
        out: list[tuple[str, str]] = []
        for job in first:
            gang = job.spec.gang
            per = gang.accelerators
            if per == 0:
                continue
            if per not in slots:
                slots[per] = sum(count * (room // per) for room, count in rooms.items())
            if slots[per] >= gang.replicas:
                continue  # room exists: it waits for another reason (quota, reservation)
            if victims_left is None:
                victims_left = _ranked_victims(sim, now)
            chosen = self._victims(job, victims_left, free, slots[per], now)
            if chosen:
                slots.clear()  # ``free`` changed
                rooms = Counter(free.values())
            for victim in chosen:
                victims_left.remove(victim)
                out.append((victim[3].id, job.id))
        return out

    def _victims(
        self, job: SimJob, candidates: list[_Candidate], free: dict[str, int], slots: int, now: float
    ) -> list[_Candidate]:
        """Lower-queue victims, greedily, until ``job`` fits (``slots`` replicas fit
        in ``free`` now, fewer than it needs); none if it never does."""
        gang = job.spec.gang
        per, need = gang.accelerators, gang.replicas
        my_queue = self.queue(job, now)
        avoid = job.pending.preempted_by if job.pending is not None else None
        trial = dict(free)
        chosen: list[_Candidate] = []
        for candidate in candidates:  # lowest queue first, so the first eligible ones are the best
            if -candidate[0] <= my_queue:
                break
            victim = candidate[3]
            if victim.id == avoid or victim.running is None:
                continue
            acc = victim.spec.gang.accelerators
            for node, n in victim.running.assignments:
                before = trial[node]
                after = trial[node] = before + n * acc
                slots += after // per - before // per
            chosen.append(candidate)
            if slots >= need:
                free.update(trial)
                return chosen
        return []

    def next_wakeup(self, sim: Simulation, now: float) -> float | None:
        """When the next running job drops a queue, if anyone is waiting to benefit."""
        if not sim.pending:
            return None
        best = math.inf
        for job in sim.running.values():  # every cycle: written out rather than via attained()
            acc = job.acc
            if not acc:
                continue
            attained = job.attained + (acc * (now - job.start) if job.running is not None else 0.0)
            if attained < _FIRST:
                t = now + (_FIRST - attained) / acc
            elif attained < _SECOND:
                t = now + (_SECOND - attained) / acc
            else:
                continue  # in the last queue: it drops no further
            if t < best:
                best = t
        return None if best == math.inf else best


# (minus queue, minus attained service, id, job): sorted, the preferred victims first.
_Candidate = tuple[int, float, str, "SimJob"]
_FIRST, _SECOND = THRESHOLDS


def _queue_of(attained: float) -> int:
    """``bisect_right(THRESHOLDS, attained)``, written out (it runs for every job, every cycle)."""
    return 0 if attained < _FIRST else 1 if attained < _SECOND else 2


def _ranked_victims(sim: Simulation, now: float) -> list[_Candidate]:
    """Running jobs that may be preempted: lowest queue (most service) first, then most
    attained service, then id (unique, so the job itself is never compared)."""
    ranked = []
    for j in sim.running.values():
        r = j.running
        if r is None or r.terminating:
            continue
        attained = j.attained + j.acc * (now - j.start)
        ranked.append((-_queue_of(attained), -attained, j.id, j))
    ranked.sort()
    return ranked


class FreeNodes:
    """Free accelerators per node of the pool's flavor in one replay, carried from one
    cycle to the next instead of recounted from every running job.

    Between two cycles, jobs leave the running set (finished, failed, preempted and
    exited) and the cycle's placements join it; a job that left and was placed again
    keeps its id, so the placements are taken as changed even when their id stayed."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.free = {n.name: n.accelerators for n in sim.pool.nodes if n.flavor == sim.pool.flavor}
        self._held: dict[str, tuple[tuple[tuple[str, int], ...], int]] = {}  # assignments, per replica

    def update(self, placed: Iterable[str]) -> dict[str, int]:
        running, held, free = self.sim.running, self._held, self.free
        placed = set(placed)
        for job_id in (held.keys() - running.keys()) | (placed & held.keys()):
            assignments, acc = held.pop(job_id)
            for node, n in assignments:
                if node in free:
                    free[node] += n * acc
        for job_id in running.keys() - held.keys():
            job = running[job_id]
            r = job.running
            if r is None:
                continue
            acc = job.spec.gang.accelerators
            held[job_id] = (r.assignments, acc)
            for node, n in r.assignments:
                if node in free:
                    free[node] -= n * acc
        return free
