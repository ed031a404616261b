"""``grow``: an elastic gang below its most grows into room that nobody waits for.

After the queue walk, a running elastic gang whose attempt ran ``grow_after_seconds``
(anti-flap) is restarted larger where the room exists now and no job still pending in
this cycle could use that flavor (room somebody waits for is theirs, even if it does not
fit them yet: the reservation and the fair order decide who gets it). On the terms of
admission: where the gang's minimum is within its org's nominal, extra replicas do not
borrow; where its minimum borrows, so may they (and a reclaim shrinks them first). A grow
is a restart from
the gang's checkpoint (the backends cannot add ranks to a running collective): the gang
stops, and comes back first at the size decided, offered its nodes first."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quota.accounting import Verdict
from scheduler.core.actions.base import Action
from scheduler.core.pool import ANYWHERE, Fit, Shape, largest_size
from values.decisions import Preemption, PreemptReason
from values.snapshot import RunningJob

if TYPE_CHECKING:
    from scheduler.core.decide import Cycle


class Grow(Action):
    name = "grow"
    frees_capacity = False  # it runs after the walk

    def after(self, cycle: Cycle) -> None:
        growing = [r for r in cycle.snap.running if _may_grow(cycle, r)]
        if not growing:
            return
        wanted = _flavors_waited_for(cycle)
        for r in sorted(growing, key=lambda r: (-r.priority, r.started_at, r.id)):
            if r.flavor not in wanted:
                _grow(cycle, r)


def _may_grow(cycle: Cycle, r: RunningJob) -> bool:
    g = r.spec.gang
    return (
        g.elastic
        and not r.terminating
        and r.id not in cycle.stopping
        and r.replicas < g.replicas
        and cycle.now - r.started_at >= cycle.policy.grow_after_seconds
    )


def _flavors_waited_for(cycle: Cycle) -> set[str]:
    """Flavors some job still pending after the walk accepts (placed ones are not)."""
    placed = {p.job_id for p in cycle.out.placements}
    rejected = {r.job_id for r in cycle.out.rejections}
    out: set[str] = set()
    for j in cycle.snap.pending:
        if j.id not in placed and j.id not in rejected:
            out.update(j.spec.gang.flavors)
    return out


def _grow(cycle: Cycle, r: RunningJob) -> None:
    g, f, pool, book = r.spec.gang, r.flavor, cycle.pool, cycle.book
    size = r.replicas
    own = pool.release_of((r,))
    prefer = tuple(n for n, _ in r.assignments)
    t = r.spec.topology
    fit = Fit(t.level, True) if t is not None and t.mode == "required" else ANYWHERE
    surplus = (size - g.least) * g.accelerators
    allowed = (
        (Verdict.NOMINAL,)
        if book.within_nominal(r.spec.org, f, -surplus)
        else (Verdict.NOMINAL, Verdict.BORROWED)
    )

    def probe(k: int) -> list[tuple[int, int]] | None:
        if book.check(r.spec.org, f, (k - size) * g.accelerators) not in allowed:
            return None
        return pool.place(f, Shape(k, g.accelerators, g.cpu, g.memory_gb), fit, extra=own, prefer=prefer)

    best = largest_size(size + 1, g.replicas, probe)
    if best is None:
        return
    k, nodes = best
    shape = Shape(k, g.accelerators, g.cpu, g.memory_gb)
    pool.hold(nodes, shape, own)  # the room it grows into: no other grower takes it
    book.add(r.spec.org, f, (k - size) * g.accelerators)
    cycle.stopping.add(r.id)
    cycle.out.preemptions.append(
        Preemption(
            r.id,
            PreemptReason.GROW,
            None,
            f"grows from {size} to {k} of {g.replicas} replicas into idle {f}; restarts from its checkpoint",
            keep=r.assignments,
            resize_to=k,
        )
    )
