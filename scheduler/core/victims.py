"""Victim search for reclaim and priority preemption: the fewest, cheapest jobs to stop.

Candidates are taken borrowed-first, lowest priority first, then the one that loses
least work (most recent checkpoint), as Kueue and KAI do; victims are added until the
beneficiary fits (quota and nodes), then each one whose removal still leaves it fitting
is dropped again, so the set is minimal. Nothing is preempted unless the beneficiary fits
afterwards.

An elastic gang above its minimum is a victim for its surplus only: it is shrunk (its
ranks beyond the minimum released, the rest kept) rather than stopped whole, and within a
priority it goes before jobs that could only be stopped whole. A shrink is a restart from
its checkpoint (the backends cannot take ranks out of a running collective): the gang
stops, and comes back first at its minimum, offered the nodes it kept.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from quota.accounting import QuotaBook, Verdict
from scheduler.core.pool import Fit, PoolState, Shape
from scheduler.core.statement import Statement
from values.decisions import PreemptReason
from values.snapshot import PendingJob, RunningJob

Extra = dict[int, tuple[int, float, float]]


@dataclass(frozen=True, slots=True)
class Victim:
    job: RunningJob
    reason: PreemptReason
    # What it gives up: the whole job, or for a shrunk elastic gang its surplus ranks
    # (a RunningJob of the same id on those ranks' nodes only).
    part: RunningJob
    keep: tuple[tuple[str, int], ...] = ()  # a shrunk gang's ranks kept, in rank order

    @property
    def kept(self) -> int:
        """Replicas a shrunk gang keeps (0: stopped whole)."""
        return sum(n for _, n in self.keep)


def victim(r: RunningJob, reason: PreemptReason) -> Victim:
    """``r`` as a victim: shrunk to its minimum where it is an elastic gang above it."""
    if not shrinkable(r):
        return Victim(r, reason, r)
    least = r.spec.gang.least
    keep: list[tuple[str, int]] = []
    give: list[tuple[str, int]] = []
    left = least
    for node, n in r.assignments:
        k = min(n, left)
        left -= k
        if k:
            keep.append((node, k))
        if n - k:
            give.append((node, n - k))
    return Victim(r, reason, replace(r, assignments=tuple(give)), tuple(keep))


def shrinkable(r: RunningJob) -> bool:
    return r.spec.gang.least < r.replicas


def victim_class(book: QuotaBook, org: str, flavor: str) -> int:
    """The first part of the victim order, the same for all of an org's jobs."""
    return 0 if book.is_borrowing(org, flavor) else 1


def victim_tail(r: RunningJob) -> tuple[object, ...]:
    """The rest of the victim order: the job's own facts (fixed while the object lives)."""
    lost_since = r.last_checkpoint_at if r.last_checkpoint_at is not None else r.started_at
    return (r.priority, not shrinkable(r), -lost_since, -r.started_at, r.id)


class _Release:
    """Victims released in simulation: their capacity as ``extra`` on the pool (the pool
    itself untouched), their quota handed back through ``statement`` if one is given (a
    trial the caller discards)."""

    def __init__(self, pool: PoolState, flavor: str, statement: Statement | None = None) -> None:
        self.pool, self.flavor, self.statement = pool, flavor, statement
        self.extra: Extra = {}
        self.freed = 0
        self.jobs: list[Victim] = []

    def add(self, v: Victim) -> None:
        pool, acc, part = self.pool, v.job.spec.gang.accelerators, v.part
        pool.release_of((part,), into=self.extra)
        self.freed += sum(
            n * acc for node, n in part.assignments if node in pool.index and pool.usable[pool.index[node]]
        )
        if self.statement is not None:
            self.statement.charge(v.job.spec.org, self.flavor, -part.accelerators)
        self.jobs.append(v)


def find_victims(
    pool: PoolState,
    book: QuotaBook,
    job: PendingJob,
    flavor: str,
    shape: Shape,
    candidates: Iterator[tuple[tuple[object, ...], RunningJob]],
    taken: set[str],
    *,
    fit: Fit,
    live: dict[tuple[str, str], int],
    protected: Callable[[RunningJob, PreemptReason], bool] = lambda r, reason: False,
) -> tuple[list[Victim], list[tuple[int, int]], Extra] | None:
    """The victims to stop so ``job`` fits on ``flavor`` and the nodes it will then get, or
    None when no set would do.

    ``candidates`` come in victim order, grouped in classes (borrowed or not, then
    priority). The cheapest class prefix whose release lets the gang fit is taken; the
    nodes come from one placement search over that release, and on each chosen node
    victims are added in victim order only until the node has room, so the set is
    minimal per node without a search per victim.
    """
    # Two passes. The first counts an org's borrowed capacity along the prefix, so a large
    # class of one org's cheap jobs is not all released for nothing. But that count also
    # spends the budget on jobs on nodes the gang will not use: an org borrowing 19 whose
    # first dozen candidates are small jobs scattered over the pool never offers its one
    # whole-node job (traced: a 1x8 job owed its guarantee for six cycles). So when the
    # first pass finds nothing, the second lets every candidate in and leaves the budget
    # to the per-node choice, which counts only the victims it takes.
    org = job.spec.org
    free_now = pool.free_total(flavor)
    need = shape.replicas * shape.acc
    # The stream is lazy (a pass usually stops after a few candidates): what the first
    # pass read is kept for the second.
    read: list[tuple[tuple[object, ...], RunningJob]] = []

    def recorded() -> Iterator[tuple[tuple[object, ...], RunningJob]]:
        for item in candidates:
            read.append(item)
            yield item

    def search(
        stream: Iterator[tuple[tuple[object, ...], RunningJob]], budgeted: bool
    ) -> tuple[list[Victim], list[tuple[int, int]], Extra] | None:
        prefix: list[Victim] = []
        whole = _Release(pool, flavor)  # capacity only: the book stays untouched

        def attempt() -> tuple[list[Victim], list[tuple[int, int]], Extra] | None:
            if free_now + whole.freed < need:
                return None
            target = pool.place(flavor, shape, fit, extra=whole.extra)
            if target is None:
                return None
            return _choose(pool, book, job, flavor, shape, fit, prefix, target, live)

        current: object = None
        checkpoint = 1
        released: dict[str, int] = {}
        for key, r in stream:
            if r.id in taken or r.id == job.preempted_by:
                continue
            # Try at each class boundary and at doubling sizes inside a large class, so a
            # one-node job does not first release hundreds of equal-class candidates.
            if current is not None and (key[:2] != current or len(prefix) >= checkpoint):
                checkpoint = 2 * len(prefix)
                got = attempt()
                if got is not None:
                    return got
            current = key[:2]
            v = victim(r, PreemptReason.PRIORITY if r.spec.org == org else PreemptReason.RECLAIM)
            if protected(r, v.reason):
                continue  # it has not run its min_runtime yet
            if v.reason is PreemptReason.RECLAIM and budgeted:
                # Only borrowed capacity is reclaimed: once the victims taken so far bring
                # an org back to nominal, the rest of its jobs are not candidates.
                o = r.spec.org
                if not book.above_nominal(o, flavor, live.get((o, flavor), 0) - released.get(o, 0)):
                    continue
                released[o] = released.get(o, 0) + v.part.accelerators
            prefix.append(v)
            whole.add(v)
        return attempt() if prefix else None

    first = search(recorded(), budgeted=True)
    if first is not None:
        return first
    return search(itertools.chain(list(read), recorded()), budgeted=False)


def _choose(
    pool: PoolState,
    book: QuotaBook,
    job: PendingJob,
    flavor: str,
    shape: Shape,
    fit: Fit,
    prefix: list[Victim],
    target: list[tuple[int, int]],
    live: dict[tuple[str, str], int],
) -> tuple[list[Victim], list[tuple[int, int]], Extra] | None:
    org, need = job.spec.org, shape.replicas * shape.acc
    on_node: dict[int, list[Victim]] = {}
    for v in prefix:
        for node, _ in v.part.assignments:
            i = pool.index.get(node)
            if i is not None:
                on_node.setdefault(i, []).append(v)
    trial = Statement(pool, book)
    rel = _Release(pool, flavor, trial)
    picked: set[str] = set()
    released: dict[str, int] = {}

    def take(v: Victim) -> None:
        picked.add(v.job.id)
        released[v.job.spec.org] = released.get(v.job.spec.org, 0) + v.part.accelerators
        rel.add(v)

    def still_borrowing(v: Victim) -> bool:
        # Only borrowed capacity is reclaimed: an org back at nominal keeps the rest.
        o = v.job.spec.org
        return v.reason is not PreemptReason.RECLAIM or book.above_nominal(
            o, flavor, live.get((o, flavor), 0) - released.get(o, 0)
        )

    with trial:  # the victims' quota is handed back in trial only: always discarded
        for i, n in target:
            room = Shape(n, shape.acc, shape.cpu, shape.mem)
            for v in on_node.get(i, []):
                if pool.slots(i, room, rel.extra) >= n:
                    break
                if v.job.id not in picked and still_borrowing(v):
                    take(v)
            if pool.slots(i, room, rel.extra) < n:
                return None
        for v in prefix:  # then quota: the lending pool or the org's own ceiling
            if book.check(org, flavor, need) in (Verdict.NOMINAL, Verdict.BORROWED):
                break
            if v.job.id not in picked and still_borrowing(v):
                take(v)
        if book.check(org, flavor, need) not in (Verdict.NOMINAL, Verdict.BORROWED):
            return None
        placement = pool.place(flavor, shape, fit, extra=rel.extra) if rel.jobs else None
        return None if placement is None else (list(rel.jobs), placement, dict(rel.extra))
