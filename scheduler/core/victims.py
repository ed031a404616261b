"""Victim search for reclaim and priority preemption: the fewest, cheapest jobs to stop.

Candidates are taken borrowed-first, lowest priority first, then the one that loses
least work (most recent checkpoint), as Kueue and KAI do; victims are added until the
beneficiary fits (quota and nodes), then each one whose removal still leaves it fitting
is dropped again, so the set is minimal. Nothing is preempted unless the beneficiary fits
afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from quota.accounting import QuotaBook, Verdict
from scheduler.core.pool import Fit, PoolState, Shape
from scheduler.decisions import PreemptReason
from scheduler.snapshot import PendingJob, RunningJob

Extra = dict[int, tuple[int, float, float]]


@dataclass(frozen=True, slots=True)
class Victim:
    job: RunningJob
    reason: PreemptReason


def victim_order(book: QuotaBook, flavor: str) -> Callable[[RunningJob], tuple[object, ...]]:
    def key(r: RunningJob) -> tuple[object, ...]:
        lost_since = r.last_checkpoint_at if r.last_checkpoint_at is not None else r.started_at
        borrowed = 0 if book.is_borrowing(r.spec.org, flavor) else 1
        return (borrowed, r.priority, -lost_since, -r.started_at, r.id)

    return key


class _Release:
    """Victims released in simulation: their capacity as ``extra`` on the pool, their
    accelerators handed back in the quota book (undone before returning)."""

    def __init__(self, pool: PoolState, book: QuotaBook, flavor: str) -> None:
        self.pool, self.book, self.flavor = pool, book, flavor
        self.extra: Extra = {}
        self.freed = 0

    def apply(self, r: RunningJob, sign: int) -> None:
        g = r.spec.gang
        for node, n in r.assignments:
            i = self.pool.index.get(node)
            if i is None:
                continue
            a, c, m = self.extra.get(i, (0, 0.0, 0.0))
            self.extra[i] = (a + sign * n * g.accelerators, c + sign * n * g.cpu, m + sign * n * g.memory_gb)
            if self.pool.usable[i]:
                self.freed += sign * n * g.accelerators
        self.book.add(r.spec.org, self.flavor, -sign * r.accelerators)


def find_victims(
    pool: PoolState,
    book: QuotaBook,
    job: PendingJob,
    flavor: str,
    shape: Shape,
    candidates: list[RunningJob],
    taken: set[str],
    *,
    reclaim: bool,
    priority: bool,
    fit: Fit,
) -> list[Victim] | None:
    org = job.spec.org
    need = shape.replicas * shape.acc
    free_now = sum(pool.free_acc[i] for i in pool.by_flavor.get(flavor, ()) if pool.usable[i])
    rel = _Release(pool, book, flavor)
    chosen: list[Victim] = []

    def fits() -> bool:
        if book.check(org, flavor, need) not in (Verdict.NOMINAL, Verdict.BORROWED):
            return False
        if free_now + rel.freed < need:
            return False
        return pool.place(flavor, shape, fit, extra=rel.extra) is not None

    try:
        for r in candidates:
            if r.id in taken or r.id == job.preempted_by:
                continue
            if r.spec.org == org:
                if not (priority and r.priority < job.priority):
                    continue
                reason = PreemptReason.PRIORITY
            else:
                # Only borrowed capacity is reclaimed: skip an org once it is back at nominal.
                if not (reclaim and book.is_borrowing(r.spec.org, flavor)):
                    continue
                reason = PreemptReason.RECLAIM
            rel.apply(r, +1)
            chosen.append(Victim(r, reason))
            if fits():
                break
        else:
            return None
        for v in reversed(chosen[:-1]):
            rel.apply(v.job, -1)
            if fits():
                chosen.remove(v)
            else:
                rel.apply(v.job, +1)
        return chosen
    finally:
        for v in chosen:
            book.add(v.job.spec.org, flavor, v.job.accelerators)
