"""``evacuate``: running jobs on unhealthy nodes are asked to stop, to run again elsewhere."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scheduler.core.actions.base import Action
from values.decisions import Preemption, PreemptReason

if TYPE_CHECKING:
    from scheduler.core.decide import Cycle


class Evacuate(Action):
    name = "evacuate"
    # The stopped jobs keep their nodes until they are gone, and those nodes are unhealthy.
    frees_capacity = False

    def before(self, cycle: Cycle) -> None:
        if not cycle.policy.move_off_unhealthy:
            return
        pool = cycle.pool
        unhealthy = {name for name, sick in zip(pool.names, pool.unhealthy, strict=True) if sick}
        if not unhealthy:
            return
        for r in sorted(cycle.snap.running, key=lambda r: r.id):
            if r.terminating or cycle.protected(r, PreemptReason.HEALTH):
                continue
            bad = [n for n, _ in r.assignments if n in unhealthy]
            if bad:
                cycle.stopping.add(r.id)
                if (r.spec.org, r.flavor) in cycle.live:
                    cycle.live[(r.spec.org, r.flavor)] -= r.accelerators
                cycle.out.preemptions.append(
                    Preemption(r.id, PreemptReason.HEALTH, None, f"node {bad[0]} is unhealthy")
                )
