"""A deliberately naive stand-in for ``decide``: first fit, no quotas, no preemption.

It lets the benchmark's own bookkeeping (apply, churn, invariant checks) be tested apart
from the real core, and a variant that over-commits a node shows the checks catch it.
"""

from __future__ import annotations

from values.decisions import Decisions, Placement, PlaceReason, Preemption, PreemptReason
from values.snapshot import Snapshot


def greedy_decide(snapshot: Snapshot, now: float) -> Decisions:
    free = {n.name: n.accelerators for n in snapshot.nodes}
    flavor_of = {n.name: n.flavor for n in snapshot.nodes}
    for running in snapshot.running:
        for node, replicas in running.assignments:
            free[node] -= replicas * running.spec.gang.accelerators
    out = Decisions()
    for job in snapshot.pending:
        gang = job.spec.gang
        for flavor in gang.flavors:
            assignments: list[tuple[str, int]] = []
            left = gang.replicas
            for node, room in free.items():
                if flavor_of[node] != flavor or room < gang.accelerators:
                    continue
                take = min(left, room // gang.accelerators) if gang.accelerators else left
                assignments.append((node, take))
                left -= take
                if left == 0:
                    break
            if left == 0:
                for node, take in assignments:
                    free[node] -= take * gang.accelerators
                out.placements.append(Placement(job.id, flavor, tuple(assignments), PlaceReason.NOMINAL))
                break
    return out


def overcommitting_decide(snapshot: Snapshot, now: float) -> Decisions:
    """Places every pending job on the first node, whatever is there: plainly wrong."""
    first = snapshot.nodes[0]
    out = Decisions()
    fitting = [job for job in snapshot.pending if first.flavor in job.spec.gang.flavors]
    for job in fitting[:20]:
        placement = Placement(
            job.id, first.flavor, ((first.name, job.spec.gang.replicas),), PlaceReason.NOMINAL
        )
        out.placements.append(placement)
    if snapshot.running:
        victim = snapshot.running[0].id
        out.preemptions.append(Preemption("job-that-does-not-run", PreemptReason.PRIORITY, victim))
    return out
