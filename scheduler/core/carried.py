"""The running set charged onto the pool and the quota, carried from one cycle to the next.

Charging every running job at the start of every cycle was most of a cycle's cost (a
busy pool runs thousands of jobs, and between two cycles only a few start or end). So
the charged state is kept between calls and brought up to date with the difference
between the previous snapshot's running jobs and this one's; running jobs are immutable
values, so an unchanged job is the same object and costs one dictionary look-up.

It is a cache, not state: what a cycle gets is, value for value, what charging this
snapshot's running jobs from scratch gives (the old code path, still used on the first
cycle and whenever nodes, orgs, flavors or policy change). Free CPU and memory are floats:
subtracting them in another order could round differently, so the incremental path is
taken only while every quantity involved is a multiple of 1/1024 below 2^30, where float
sums are exact in any order; otherwise the cycle charges from scratch, as before.

Each thread has its own carried state, so ``decide`` stays a function of its arguments.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from scheduler.core.pool import PoolState
from scheduler.core.victims import victim_tail
from values.snapshot import RunningJob, Snapshot

Key = tuple[str, str]  # (org, flavor)
BULK_AT = 64  # more new running jobs than this and a quarter of all: re-sort, do not insert
Ranked = list[tuple[object, ...]]  # victim order tails (ending with the job id), sorted


def _exact(x: float) -> bool:
    return abs(x) < 2**30 and float(x * 1024).is_integer()


@dataclass(slots=True)
class Charged:
    """One cycle's own copy of what the running jobs hold."""

    pool: PoolState  # free capacity charged; the indexes are not built yet
    held: dict[Key, int]  # accelerators per (org, flavor), for the quota book
    live: dict[Key, int]  # the same without jobs asked to stop
    stopping: set[str]  # running jobs asked to stop
    stopping_for: dict[str, list[str]]  # beneficiary -> its stopping victims
    # Per counted flavor, the running jobs of known orgs (in no particular order: every
    # use sorts them, or only adds them up).
    running_by_flavor: dict[str, list[RunningJob]]
    memo: dict[object, object]  # see _Carry.memo
    per_object: dict[int, tuple[object, object]]  # last cycle's, to read
    # Possible victims per flavor and org in victim order (see victims.victim_tail), and
    # the running jobs by id to find them; None where the cycle must rank them itself.
    # Shared with the carry: read only.
    ranked: dict[str, dict[str, Ranked]] | None = None
    jobs: dict[str, RunningJob] | None = None
    # Backfill's release order, see _Carry.ends; None where the cycle sorts it itself.
    by_flavor: dict[str, dict[str, RunningJob]] | None = None
    ends: dict[str, list[tuple[float, str]]] | None = None
    unlimited: dict[str, dict[str, None]] | None = None
    holdings: dict[Key, dict[str, tuple[float | None, int]]] | None = None


class _Carry:
    def __init__(self, snap: Snapshot) -> None:
        self.nodes, self.orgs, self.flavors, self.policy = snap.nodes, snap.orgs, snap.flavors, snap.policy
        self.template = PoolState(snap.nodes)
        self.capacity = {f.name for f in snap.flavors}  # as the cycle counts flavors
        self.org_names = {o.name for o in snap.orgs}
        self.exact = all(
            _exact(c) and _exact(m)
            for c, m in zip(self.template.total_cpu, self.template.total_mem, strict=True)
        )
        self.free_acc = list(self.template.free_acc)
        self.free_cpu = list(self.template.free_cpu)
        self.free_mem = list(self.template.free_mem)
        self.jobs: dict[str, RunningJob] = {}
        self.held: dict[Key, int] = {}
        self.live: dict[Key, int] = {}
        self.stopping: set[str] = set()
        self.stopping_for: dict[str, dict[str, None]] = {}
        # Answers that depend only on nodes, orgs, flavors and policy (whether a kind of
        # job can ever run), and per-object facts of immutable jobs (keyed by id() and
        # checked by identity; kept only for the objects of the last cycle).
        self.memo: dict[object, object] = {}
        self.per_object: dict[int, tuple[object, object]] = {}
        self.ranked: dict[str, dict[str, Ranked]] = {f: {} for f in self.capacity}
        self.by_flavor: dict[str, dict[str, RunningJob]] = {f: {} for f in self.capacity}
        # Per flavor, (start + runtime limit, id) of its running jobs, sorted, and the ids
        # of those without a limit: the order backfill needs, kept instead of re-sorted.
        self.ends: dict[str, list[tuple[float, str]]] = {f: [] for f in self.capacity}
        self.unlimited: dict[str, dict[str, None]] = {f: {} for f in self.capacity}
        # Per (org, flavor): each running job's (expected end, accelerators), for when
        # the org's quota frees up.
        self.holdings: dict[Key, dict[str, tuple[float | None, int]]] = {}
        self._bulk = False

    def fits(self, snap: Snapshot) -> bool:
        return (
            (snap.nodes is self.nodes or snap.nodes == self.nodes)
            and (snap.orgs is self.orgs or snap.orgs == self.orgs)
            and (snap.flavors is self.flavors or snap.flavors == self.flavors)
            and (snap.policy is self.policy or snap.policy == self.policy)
        )

    def update(self, running: tuple[RunningJob, ...]) -> bool:
        """Bring the charge up to ``running``; False when it cannot be done exactly."""
        old = self.jobs
        new = {r.id: r for r in running}
        if len(new) != len(running):
            return False  # duplicate ids: charge from scratch, exactly as given
        # Many new jobs at once (the first cycle): the orders are rebuilt and sorted
        # once at the end rather than kept by inserting each job (an insertion moves a
        # list's tail: cheap for a few, not for a whole pool).
        added = len(new) - len(old.keys() & new.keys())
        bulk = self._bulk = added > max(BULK_AT, len(new) // 4)
        for job_id in old.keys() - new.keys():
            self._charge(old[job_id], -1)
            if not bulk:
                self._rank(old[job_id], -1)
                self._file(old[job_id], -1)
        for r in running:
            was = old.get(r.id)
            if was is not r:
                if was is not None:
                    if not bulk:
                        self._rank(was, -1)
                        self._rank(r, 1)
                        self._refile(was, r)
                    if _same_charge(was, r):
                        continue  # a new checkpoint or priority: holds the same as before
                    self._charge(was, -1)
                elif not bulk:
                    self._rank(r, 1)
                    self._file(r, 1)
                if not self._charge(r, 1):
                    return False
        if bulk:
            self._reorder(running)
        self.jobs = new
        return True

    def _reorder(self, running: tuple[RunningJob, ...]) -> None:
        """The orders rebuilt from all of ``running``: appended, then sorted once."""
        self.ranked = {f: {} for f in self.capacity}
        self.by_flavor = {f: {} for f in self.capacity}
        self.ends = {f: [] for f in self.capacity}
        self.unlimited = {f: {} for f in self.capacity}
        self.holdings = {}
        for r in running:
            self._rank(r, 1)
            self._file(r, 1)
        for lst in self.ends.values():
            lst.sort()
        for by_org in self.ranked.values():
            for tails in by_org.values():
                tails.sort()
        self._bulk = False

    def _file(self, r: RunningJob, sign: int) -> None:
        jobs = self.by_flavor.get(r.flavor)
        if jobs is None or r.spec.org not in self.org_names:
            return
        limit = r.spec.max_runtime_seconds
        ends, unlimited = self.ends[r.flavor], self.unlimited[r.flavor]
        holdings = self.holdings.setdefault((r.spec.org, r.flavor), {})
        if sign > 0:
            holdings[r.id] = (r.expected_end, r.accelerators)
        else:
            del holdings[r.id]
        if sign > 0:
            jobs[r.id] = r
            if limit is None:
                unlimited[r.id] = None
            elif self._bulk:
                ends.append((r.started_at + limit, r.id))
            else:
                bisect.insort(ends, (r.started_at + limit, r.id))
        else:
            del jobs[r.id]
            if limit is None:
                del unlimited[r.id]
            else:
                entry = (r.started_at + limit, r.id)
                i = bisect.bisect_left(ends, entry)
                assert ends[i] == entry, "release order out of step with the running set"
                del ends[i]

    def _refile(self, was: RunningJob, r: RunningJob) -> None:
        if not (
            was.started_at == r.started_at
            and was.spec is r.spec
            and was.assignments == r.assignments
            and was.flavor == r.flavor
            and r.flavor in self.by_flavor
            and r.spec.org in self.org_names
        ):
            self._file(was, -1)
            self._file(r, 1)
        else:
            self.by_flavor[r.flavor][r.id] = r  # same place in the release order

    def _rank(self, r: RunningJob, sign: int) -> None:
        # The cycle's candidates: running on a counted flavor for a known org,
        # preemptible, not already stopping.
        if r.terminating or not r.spec.preemptible or r.flavor not in self.capacity:
            return
        if r.spec.org not in self.org_names:
            return
        lst = self.ranked[r.flavor].setdefault(r.spec.org, [])
        tail = victim_tail(r)  # unique: it ends with the job id
        if sign > 0 and self._bulk:
            lst.append(tail)
        elif sign > 0:
            bisect.insort(lst, tail)
        else:
            i = bisect.bisect_left(lst, tail)
            assert lst[i] == tail, "ranked victims out of step with the running set"
            del lst[i]

    def _charge(self, r: RunningJob, sign: int) -> bool:
        g = r.spec.gang
        a, c, m = g.accelerators, g.cpu, g.memory_gb
        if sign > 0 and not (_exact(c) and _exact(m)):
            return False
        index, total = self.template.index, 0
        for node, n in r.assignments:
            i = index.get(node)
            if i is not None:
                self.free_acc[i] -= sign * n * a
                self.free_cpu[i] -= sign * n * c
                self.free_mem[i] -= sign * n * m
            total += n
        acc, key = sign * a * total, (r.spec.org, r.flavor)
        if r.flavor in self.capacity and key[0] in self.org_names:
            _bump(self.held, key, acc)
        if r.terminating:
            if sign > 0:
                self.stopping.add(r.id)
            else:
                self.stopping.discard(r.id)
            if r.preempted_for:
                victims = self.stopping_for.setdefault(r.preempted_for, {})
                if sign > 0:
                    victims[r.id] = None
                else:
                    victims.pop(r.id, None)
                    if not victims:
                        del self.stopping_for[r.preempted_for]
        elif r.flavor in self.capacity:
            _bump(self.live, key, acc)
        return True

    def view(self) -> Charged:
        pool = self.template.with_free(list(self.free_acc), list(self.free_cpu), list(self.free_mem))
        return Charged(
            pool,
            dict(self.held),
            dict(self.live),
            set(self.stopping),
            {b: list(v) for b, v in self.stopping_for.items()},
            {f: list(jobs.values()) for f, jobs in self.by_flavor.items()},
            self.memo,
            self.per_object,
            self.ranked,
            self.jobs,
            self.by_flavor,
            self.ends,
            self.unlimited,
            self.holdings,
        )


def _same_charge(a: RunningJob, b: RunningJob) -> bool:
    return (
        a.assignments == b.assignments
        and a.spec is b.spec
        and a.flavor == b.flavor
        and a.terminating == b.terminating
        and a.preempted_for == b.preempted_for
    )


def _bump(counts: dict[Key, int], key: Key, q: int) -> None:
    # A key whose count falls to zero is dropped: from scratch, it would not be there.
    left = counts.get(key, 0) + q
    if left:
        counts[key] = left
    else:
        counts.pop(key, None)


def charge_from_scratch(snap: Snapshot) -> Charged:
    """Every running job charged in snapshot order: the reference the carry must match."""
    pool = PoolState(snap.nodes)
    capacity, orgs = {f.name for f in snap.flavors}, {o.name for o in snap.orgs}
    held: dict[Key, int] = {}
    live: dict[Key, int] = {}
    stopping: set[str] = set()
    stopping_for: dict[str, list[str]] = {}
    by_flavor: dict[str, list[RunningJob]] = {f: [] for f in capacity}
    for r in snap.running:
        pool.charge_running(r)
        key = (r.spec.org, r.flavor)
        acc = r.spec.gang.accelerators * sum(n for _, n in r.assignments)
        if r.flavor in capacity and key[0] in orgs:
            held[key] = held.get(key, 0) + acc
            by_flavor[r.flavor].append(r)
        if r.terminating:
            stopping.add(r.id)
            if r.preempted_for:
                stopping_for.setdefault(r.preempted_for, []).append(r.id)
        elif r.flavor in capacity:
            live[key] = live.get(key, 0) + acc
    return Charged(pool, held, live, stopping, stopping_for, by_flavor, {}, {})


_local = threading.local()


def carry_for(snap: Snapshot) -> _Carry | None:
    """This thread's carried state brought up to ``snap``, or None where it cannot be."""
    carry: _Carry | None = getattr(_local, "carry", None)
    if carry is None or not carry.fits(snap):
        carry = _Carry(snap)
        _local.carry = carry
    if not carry.exact or not carry.update(snap.running):
        _local.carry = None  # not exact: this cycle and the next start from scratch
        return None
    return carry


def forget() -> None:
    """Drop this thread's carried state: the next cycle charges from scratch."""
    _local.carry = None


@contextmanager
def apart() -> Iterator[None]:
    """Cycles inside this block carry their own state, and this thread's is given back
    untouched afterwards: a forecast's cycles in virtual time would otherwise leave the
    live loop's carry in the future, and its next cycle would charge the way back."""
    saved = getattr(_local, "carry", None)
    _local.carry = None
    try:
        yield
    finally:
        _local.carry = saved


def charged(snap: Snapshot) -> Charged:
    carry = carry_for(snap)
    return charge_from_scratch(snap) if carry is None else carry.view()


def keep(per_object: dict[int, tuple[object, object]]) -> None:
    """The cycle's per-object facts, for the next cycle on this thread to reuse."""
    carry: _Carry | None = getattr(_local, "carry", None)
    if carry is not None:
        carry.per_object = per_object
