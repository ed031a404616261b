"""The order in which the cycle considers pending jobs.

Fair (the default): within an org, priority then age; across orgs, the org whose next job
fits within its nominal quota goes first, then an org whose next job would borrow but a
later one fits within its nominal, then orgs that would only borrow; within each tier the
smallest weighted dominant share with decayed usage goes first. Shares are recomputed as
the cycle places jobs, so orgs interleave instead of one draining its whole queue.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterator
from operator import attrgetter
from typing import TYPE_CHECKING

from quota.fairshare import dominant_share
from scheduler.snapshot import Ordering, PendingJob

if TYPE_CHECKING:
    from scheduler.core.decide import Cycle


_submitted_then_id = attrgetter("submitted_at", "id")


def within_org_key(j: PendingJob) -> tuple[int, float, str]:
    return (-j.priority, j.submitted_at, j.id)


def queue_order(jobs: list[PendingJob], cycle: Cycle) -> Iterator[PendingJob]:
    ordering = cycle.policy.ordering
    if ordering is Ordering.FIFO:
        yield from sorted(jobs, key=_submitted_then_id)
        return
    if ordering is Ordering.PRIORITY:
        yield from sorted(jobs, key=within_org_key)
        return
    yield from _fair(jobs, cycle)


def nominated_first(jobs: list[PendingJob], cycle: Cycle) -> Iterator[PendingJob]:
    """Jobs that already had victims stopped for them go first (Kubernetes' nominated
    node): the room a reclaim freed goes to the job it was freed for, not to whichever
    borrower the fair order reaches first, which would only make it reclaim again."""

    first: list[PendingJob] = []
    rest: list[PendingJob] = []
    stopping_for = cycle.stopping_for
    for j in jobs:  # one pass, order kept within each part
        (first if j.nominated or j.id in stopping_for else rest).append(j)
    yield from sorted(first, key=within_org_key)
    yield from queue_order(rest, cycle)


def _fair(jobs: list[PendingJob], cycle: Cycle) -> Iterator[PendingJob]:
    queues: dict[str, list[PendingJob]] = {}
    for j in jobs:
        queues.setdefault(j.spec.org, []).append(j)
    for q in queues.values():
        q.sort(key=within_org_key)
    book, half_life = cycle.book, cycle.policy.half_life_seconds
    capacity = {f: c for f, c in book.capacity.items() if c > 0}

    # What is left of each org's queue, by (accepted flavors, accelerators): the kinds are
    # few, so "does any of its jobs still fit within nominal" is a short loop.
    kinds: dict[str, list[tuple[tuple[str, ...], int]]] = {}
    left: dict[str, Counter[tuple[tuple[str, ...], int]]] = {}
    for org, q in queues.items():
        gangs = [j.spec.gang for j in q]
        kinds[org] = ks = [(g.flavors, g.replicas * g.accelerators) for g in gangs]
        left[org] = Counter(ks)

    def fits(org: str, flavors: tuple[str, ...], q: int) -> bool:
        return any(f in book.capacity and book.alloc(org, f) + q <= book.nominal(org, f) for f in flavors)

    def tier(org: str, j: PendingJob) -> int:
        """0: the org's next job fits within its nominal. 1: it would borrow, but a later
        job of the org fits within nominal: the org has a claim on the room inside its
        nominal, so it goes before orgs that only borrow (else their borrowers take that
        room first, and the org's job must reclaim it from them, a preemption and two
        cycles later). Its own order is kept: its next job still goes first. 2: borrowers."""
        g = j.spec.gang
        if fits(org, g.flavors, g.total_accelerators):
            return 0
        return 1 if any(n and fits(org, fl, q) for (fl, q), n in left[org].items()) else 2

    shares: dict[str, tuple[int, float]] = {}

    def share(org: str) -> float:
        # Recomputed only when the org's holdings changed (the book counts changes per org).
        version = book.version(org)
        hit = shares.get(org)
        if hit is not None and hit[0] == version:
            return hit[1]
        alloc = {f: book.alloc(org, f) for f in capacity}
        usage = cycle.snap.usage.get(org, {})
        value = dominant_share(alloc, usage, capacity, cycle.orgs[org].weight, half_life)
        shares[org] = (version, value)
        return value

    heap = [(tier(org, q[0]), share(org), org) for org, q in queues.items()]
    heapq.heapify(heap)
    pos = dict.fromkeys(queues, 0)
    while heap:
        _, _, org = heapq.heappop(heap)
        queue, counts, was = queues[org], left[org], pos[org]
        yield queue[was]
        # A job that fails like an earlier job of its kind changes nothing, so where it
        # stands in the order does not matter: settle the org's run of them right here
        # instead of one heap round each (on a saturated pool that is nearly every job).
        pos[org] = now = cycle.settle(queue, was + 1)
        for kind in kinds[org][was:now]:
            counts[kind] -= 1
        if now < len(queue):
            heapq.heappush(heap, (tier(org, queue[now]), share(org), org))
