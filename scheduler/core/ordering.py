"""The order in which the cycle considers pending jobs.

Fair (the default): within an org, priority, then jobs back after an infrastructure
failure (expedited), then response ratio or age; across orgs, the org whose next job
fits within its nominal quota goes first, then an org whose next job would borrow but a
later one fits within its nominal, then orgs that would only borrow; within each tier the
smallest weighted dominant share with decayed usage goes first. Shares are recomputed as
the cycle places jobs, so orgs interleave instead of one draining its whole queue.
"""

from __future__ import annotations

import heapq
import statistics
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter

from quota.accounting import QuotaBook
from quota.fairshare import dominant_share
from values.decisions import PendingStatus
from values.snapshot import Ordering, PendingJob, WithinOrg


@dataclass(frozen=True, slots=True)
class QueueInputs:
    """What the order reads; it writes nothing. ``book`` is the cycle's, read live: shares
    and tiers follow the placements made as the walk goes."""

    ordering: Ordering
    within_org: WithinOrg
    now: float
    book: QuotaBook
    usage: Mapping[str, Mapping[str, float]]
    weights: Mapping[str, float]
    half_life_seconds: float
    stopping_for: Collection[str]  # jobs with victims stopping for them
    # failed_alike(queue, i): the statuses of queue[i], queue[i + 1], ... for as long as
    # each would fail as a job of its kind already did (and so changes nothing): the order
    # passes such a run of jobs without a round each.
    failed_alike: Callable[[Sequence[PendingJob], int], list[PendingStatus]]


# What the order hands the cycle: a job to consider (None), or one of a run of jobs that
# fail as earlier ones of their kind did, with that status.
Turn = tuple[PendingJob, PendingStatus | None]


_submitted_then_id = attrgetter("submitted_at", "id")
_priority = attrgetter("priority")
_expedite = attrgetter("expedite")


def within_org_key(j: PendingJob) -> tuple[int, float, str]:
    return (-j.priority, j.submitted_at, j.id)


def by_priority_then_age(jobs: list[PendingJob], expedite: bool = False) -> list[PendingJob]:
    """``jobs`` sorted in place by ``within_org_key``, in C-keyed stable sorts (no Python
    key per job): submit time and id, then priority descending, which keeps that order on
    ties. With ``expedite``, expedited jobs go first within their priority."""
    jobs.sort(key=_submitted_then_id)
    if expedite and any(map(_expedite, jobs)):
        jobs.sort(key=_expedite, reverse=True)
    jobs.sort(key=_priority, reverse=True)
    return jobs


def by_priority_then_ratio(jobs: list[PendingJob], now: float) -> list[PendingJob]:
    """``jobs`` sorted by priority, then expedited first, then highest response ratio
    (wait + limit) / limit, then age (``WithinOrg.RESPONSE_RATIO``)."""
    limits = [j.spec.max_runtime_seconds for j in jobs]
    known = [x for x in limits if x]
    if not known:
        return by_priority_then_age(jobs, expedite=True)
    usual = statistics.median(known)
    # The keys built in one comprehension, not by a key function: one Python call per
    # waiting job per cycle was the larger part of this sort.
    ranked = [
        (-j.priority, not j.expedite, -(now - j.submitted_at + (x or usual)) / (x or usual), j.submitted_at,
         j.id, j)
        for j, x in zip(jobs, limits, strict=True)
    ]  # fmt: skip
    ranked.sort()  # ids are unique: the job itself is never compared
    return [r[5] for r in ranked]


def queue_order(jobs: list[PendingJob], inputs: QueueInputs) -> Iterator[Turn]:
    ordering = inputs.ordering
    if ordering is Ordering.FIFO:
        for j in sorted(jobs, key=_submitted_then_id):
            yield j, None
        return
    if ordering is Ordering.PRIORITY:
        for j in by_priority_then_age(list(jobs)):
            yield j, None
        return
    yield from _fair(jobs, inputs)


def nominated_first(jobs: list[PendingJob], inputs: QueueInputs) -> Iterator[Turn]:
    """Jobs that already had victims stopped for them go first (Kubernetes' nominated
    node): the room a reclaim freed goes to the job it was freed for, not to whichever
    borrower the fair order reaches first, which would only make it reclaim again."""

    first: list[PendingJob] = []
    rest: list[PendingJob] = []
    stopping_for = inputs.stopping_for
    for j in jobs:  # one pass, order kept within each part
        (first if j.nominated or j.id in stopping_for else rest).append(j)
    for j in sorted(first, key=within_org_key):
        yield j, None
    yield from queue_order(rest, inputs)


def _fair(jobs: list[PendingJob], inputs: QueueInputs) -> Iterator[Turn]:
    queues: dict[str, list[PendingJob]] = {}
    for j in jobs:
        queues.setdefault(j.spec.org, []).append(j)
    ratio = inputs.within_org is WithinOrg.RESPONSE_RATIO
    for org, q in queues.items():
        # An expedited job (back after a failure that was not its own) heads its org's
        # jobs of its priority; only in the org's own queue, so other orgs' fair share and
        # higher priorities keep their turn.
        queues[org] = by_priority_then_ratio(q, inputs.now) if ratio else by_priority_then_age(q, True)
    book, half_life, failed_alike = inputs.book, inputs.half_life_seconds, inputs.failed_alike
    capacity = {f: c for f, c in book.capacity.items() if c > 0}

    def fits(org: str, flavors: tuple[str, ...], q: int) -> bool:
        return any(f in book.capacity and book.within_nominal(org, f, q) for f in flavors)

    pos = dict.fromkeys(queues, 0)
    # Per org, the last answer to "does a later job fit within nominal": the book version
    # and room it was found at, and the first job at or after the org's position then
    # that fits (-1: none). It holds while the holdings stay the same and the queue has
    # not moved past that job; while the room has only shrunk, the jobs before it still
    # do not fit, so the search goes on from it instead of from the start.
    found: dict[str, tuple[int, dict[str, int], int]] = {}

    def later_fits(org: str) -> bool:
        queue, start, version = queues[org], pos[org], book.version(org)
        hit = found.get(org)
        if hit is not None and hit[0] == version and (hit[2] < 0 or hit[2] >= start):
            return hit[2] >= 0
        room = {f: book.room_in_nominal(org, f) for f in book.capacity}
        begin = start
        if hit is not None and all(r <= hit[1][f] for f, r in room.items()):
            if hit[2] < 0:
                found[org] = (version, room, -1)
                return False
            begin = max(start, hit[2])
        at = -1
        # Without an accelerator of room anywhere nothing is left to claim (a job without
        # accelerators takes no quota: others' borrowers cannot take its room).
        if max(room.values(), default=0) >= 1:
            for i in range(begin, len(queue)):
                g = queue[i].spec.gang
                q = g.least_accelerators
                if q and any(room.get(f, 0) >= q for f in g.flavors):
                    at = i
                    break
        found[org] = (version, room, at)
        return at >= 0

    def tier(org: str, j: PendingJob) -> int:
        """0: the org's next job fits within its nominal. 1: it would borrow, but a later
        job of the org fits within nominal: the org has a claim on the room inside its
        nominal, so it goes before orgs that only borrow (else their borrowers take that
        room first, and the org's job must reclaim it from them, a preemption and two
        cycles later). Its own order is kept: its next job still goes first. 2: borrowers."""
        g = j.spec.gang
        if fits(org, g.flavors, g.least_accelerators):
            return 0
        return 1 if later_fits(org) else 2

    shares: dict[str, tuple[int, float]] = {}

    def share(org: str) -> float:
        # Recomputed only when the org's holdings changed (the book counts changes per org).
        version = book.version(org)
        hit = shares.get(org)
        if hit is not None and hit[0] == version:
            return hit[1]
        alloc = {f: book.alloc(org, f) for f in capacity}
        usage = inputs.usage.get(org, {})
        value = dominant_share(alloc, usage, capacity, inputs.weights[org], half_life)
        shares[org] = (version, value)
        return value

    heap = [(tier(org, q[0]), share(org), org) for org, q in queues.items()]
    heapq.heapify(heap)
    while heap:
        _, _, org = heapq.heappop(heap)
        queue, was = queues[org], pos[org]
        yield queue[was], None
        # A job that fails like an earlier job of its kind changes nothing, so where it
        # stands in the order does not matter: the org's run of them follows right here
        # instead of one heap round each (on a saturated pool that is nearly every job).
        now, n = was + 1, len(queue)
        for status in failed_alike(queue, now):
            yield queue[now], status
            now += 1
        pos[org] = now
        if now < n:
            heapq.heappush(heap, (tier(org, queue[now]), share(org), org))
