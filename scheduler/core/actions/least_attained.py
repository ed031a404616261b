"""``least_attained``: Tiresias' preemption (Gu et al., NSDI'19, discretized 2D-LAS).

A least-attained-service policy puts each job in a queue by the accelerator-seconds it
has received (``RunningJob.service``) and passes the queue to the core as its priority:
the first queue has the highest. After the walk, the first few jobs still waiting
(``MAX_BENEFICIARIES``, highest queue first, then submission) that do not fit the free
accelerators may preempt running jobs of lower queues, most attained service first,
greedily until they fit; a job no set makes fit preempts nobody. Org-blind, as Tiresias
is. The victims keep their nodes until they are gone; the beneficiary then goes first.

Room is what is free on schedulable nodes once this cycle's placements and claims are
made. A job placed in this cycle is a candidate like any running one (with its service),
as when this ran after the decisions were applied (the simulator's old hook); the job
that preempted the beneficiary never is (as in every preemption rule here).
"""

from __future__ import annotations

import heapq
from collections import Counter
from typing import TYPE_CHECKING

from scheduler.core.actions.base import Action
from values.decisions import PendingReason, Preemption, PreemptReason
from values.snapshot import PendingJob, RunningJob

if TYPE_CHECKING:
    from scheduler.core.decide import Cycle

MAX_BENEFICIARIES = 16


class LeastAttained(Action):
    name = "least_attained"
    frees_capacity = False  # it runs after the walk, and victims hold their nodes until gone

    def after(self, cycle: Cycle) -> None:
        pending = cycle.out.pending
        waiting = [
            (-j.priority, j.submitted_at, j.id, j)
            for j in cycle.snap.pending
            if (st := pending.get(j.id)) is not None and st.reason is not PendingReason.PREEMPTING
        ]
        if not waiting:
            return
        victims: dict[str, list[tuple[int, float, str, RunningJob]]] = {}
        free: dict[str, dict[str, int]] = {}
        for _, _, _, job in heapq.nsmallest(MAX_BENEFICIARIES, waiting):
            for f in job.spec.gang.flavors:
                if f not in free:
                    free[f] = _free(cycle, f)
                    victims[f] = _ranked(cycle, f)
                chosen = _victims(job, victims[f], free[f])
                if chosen:
                    for v in chosen:
                        victims[f].remove(v)
                        cycle.stopping.add(v[3].id)
                        cycle.out.preemptions.append(
                            Preemption(
                                v[3].id, PreemptReason.SERVICE, job.id, f"makes room for {job.id} (service)"
                            )
                        )
                    cycle.pend(
                        job, PendingReason.PREEMPTING, f"{len(chosen)} job(s) with more service asked to stop"
                    )
                    break


def _free(cycle: Cycle, f: str) -> dict[str, int]:
    pool = cycle.pool
    return {pool.names[i]: max(0, pool.free_acc[i]) for i in pool.by_flavor.get(f, []) if pool.usable[i]}


def _ranked(cycle: Cycle, f: str) -> list[tuple[int, float, str, RunningJob]]:
    """Possible victims: lowest queue (lowest priority) first, then most attained service."""
    now, ranked = cycle.now, []
    for r in [*cycle.running_by_flavor.get(f, []), *cycle.placed_by_flavor.get(f, [])]:
        if r.terminating or r.id in cycle.stopping or cycle.protected(r, PreemptReason.SERVICE):
            continue
        ranked.append((r.priority, -(r.service + r.accelerators * (now - r.started_at)), r.id, r))
    ranked.sort()
    return ranked


def _victims(
    job: PendingJob, candidates: list[tuple[int, float, str, RunningJob]], free: dict[str, int]
) -> list[tuple[int, float, str, RunningJob]]:
    """Victims of lower queues, in order, until ``job`` fits in ``free`` (updated then);
    none if it does not fit even then, or fits already (it waits for another reason)."""
    gang = job.spec.gang
    per, need = gang.accelerators, gang.least
    if per == 0:
        return []
    rooms = Counter(free.values())
    slots = sum(count * (room // per) for room, count in rooms.items())
    if slots >= need:
        return []
    trial = dict(free)
    chosen = []
    for candidate in candidates:
        victim = candidate[3]
        if victim.priority >= job.priority:
            break  # the same queue or a higher one: no more victims
        if victim.id == job.preempted_by:
            continue
        acc = victim.spec.gang.accelerators
        for node, n in victim.assignments:
            if node not in trial:
                continue
            before = trial[node]
            after = trial[node] = before + n * acc
            slots += after // per - before // per
        chosen.append(candidate)
        if slots >= need:
            free.update(trial)
            return chosen
    return []
