"""EASY backfill: when will the blocked head gang fit, and on which nodes.

Running jobs release their nodes at their expected end (start + max_runtime; a job being
stopped, after its grace period). The reservation is the earliest prefix of those
releases after which the gang fits, found by doubling then bisecting so a pool with tens
of thousands of running jobs costs a few placement searches, not one per job.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from operator import itemgetter

from scheduler.core.pool import PoolState, Shape
from values.snapshot import RunningJob

Extra = dict[int, tuple[int, float, float]]
_end_and_id = itemgetter(0, 1)


@dataclass(slots=True)
class Hold:
    job_id: str
    flavor: str
    start_at: float
    nodes: tuple[int, ...]
    # Capacity taken out of the free pool for the gang: (acc, cpu, mem) per node index.
    held: Extra = field(default_factory=dict)
    # The running job whose release the start waits for last (None: nothing to wait for).
    last_release: RunningJob | None = None


class Releases:
    """Running jobs in the order they release capacity, as (end, job): a list, or a sorted
    stream read only as far as the search goes (a busy pool runs thousands of jobs; the
    reservation usually needs the first few dozen). ``total`` is the stream's length."""

    def __init__(self, stream: Iterable[tuple[float, RunningJob]], total: int) -> None:
        self._stream: Iterator[tuple[float, RunningJob]] = iter(stream)
        self._got: list[tuple[float, RunningJob]] = []
        self.total = total

    def first(self, n: int) -> list[tuple[float, RunningJob]]:
        got = self._got
        if len(got) < n:
            got.extend(itertools.islice(self._stream, n - len(got)))
        return got if n >= len(got) else got[:n]

    def jobs(self, start: int, end: int) -> list[RunningJob]:
        return [r for _, r in self.first(end)[start:end]]

    def end_of(self, k: int) -> float:
        return self.first(k + 1)[k][0]

    def job_of(self, k: int) -> RunningJob:
        return self.first(k + 1)[k][1]

    def accelerators_until(self, need: int) -> int:
        """The fewest releases that free ``need`` accelerators, or all of them."""
        freed = 0
        k = 0
        while k < self.total:
            batch = self.first(min(self.total, max(2 * k, 16)))
            assert len(batch) > k, "fewer releases than counted"
            for _, r in batch[k:]:
                k += 1
                freed += r.accelerators
                if freed >= need:
                    return k
        return self.total


def earliest_fit(
    pool: PoolState,
    flavor: str,
    shape: Shape,
    releases: Releases,
    place: Callable[[Extra], list[tuple[int, int]] | None],
) -> tuple[float, list[tuple[int, int]], RunningJob | None] | None:
    """(start time, placement, the last release it waits for) after the fewest releases,
    in end-time order."""
    need = shape.replicas * shape.acc
    # No search before enough accelerators come free (what is free now counts too).
    k_min = releases.accelerators_until(need - pool.free_total(flavor))
    n = releases.total

    # Releases are added to a running total as k grows, and bisection starts from a copy
    # of the last prefix known not to fit: each job is added O(log n) times at most,
    # instead of rebuilding every prefix from scratch.
    def extend(extra: Extra, start: int, end: int) -> Extra:
        return pool.release_of(releases.jobs(start, end), into=extra)

    lo, hi, step = k_min - 1, k_min, 1
    lo_extra = extend({}, 0, lo)
    hi_extra = extend(dict(lo_extra), lo, hi)
    found = place(hi_extra)
    while found is None and hi < n:
        lo, lo_extra, step = hi, hi_extra, step * 2
        hi = min(n, hi + step)
        hi_extra = extend(dict(lo_extra), lo, hi)
        found = place(hi_extra)
    if found is None:
        return None
    while hi - lo > 1:  # invariant: lo does not fit, hi fits
        mid = (lo + hi) // 2
        mid_extra = extend(dict(lo_extra), lo, mid)
        got = place(mid_extra)
        if got is None:
            lo, lo_extra = mid, mid_extra
        else:
            hi, found = mid, got
    return releases.end_of(hi - 1), found, releases.job_of(hi - 1)


def releases_of(
    running: list[RunningJob], stopping: set[str], now: float
) -> tuple[Releases, Callable[[], list[tuple[float, RunningJob]]]]:
    """Releases of these jobs (a stopping job's at the end of its grace period), and of
    those without a runtime limit (to go by when nothing else does)."""
    # (end, id, job), sorted on (end, id) by a C key: thousands of running jobs per call.
    keyed: list[tuple[float, str, RunningJob]] = []
    unknown: list[tuple[float, RunningJob]] = []
    for r in running:
        spec = r.spec
        if r.terminating or r.id in stopping:
            keyed.append((max(now + spec.grace_period_seconds, now), r.id, r))
        elif spec.max_runtime_seconds is None:
            unknown.append((math.inf, r))
        else:
            keyed.append((max(r.started_at + spec.max_runtime_seconds, now), r.id, r))
    keyed.sort(key=_end_and_id)
    unknown.sort(key=lambda e: e[1].id)
    return Releases([(end, r) for end, _, r in keyed], len(keyed)), lambda: unknown


def carried_releases(
    ends: list[tuple[float, str]],
    jobs: dict[str, RunningJob],
    unlimited: dict[str, None],
    placed: list[RunningJob],
    skip: set[str],
    stopping: set[str],
    now: float,
) -> tuple[Releases, Callable[[], list[tuple[float, RunningJob]]]]:
    """What ``releases_of`` gives for ``jobs`` (less ``skip``) and ``placed``, from the
    running jobs' limits kept sorted between cycles: (start + limit, id) in ``ends``, the
    ids without a limit in ``unlimited``. Only the stopping jobs, this cycle's placements
    and jobs already past their limit are sorted here; the rest is read lazily."""
    head: list[tuple[float, str, RunningJob]] = []  # sorted apart: re-keyed or not in ``ends``
    gone = 0  # entries of ``ends`` after the first ``p`` that are left out
    for job_id in stopping:
        r = jobs.get(job_id)
        if r is None or job_id in skip:
            continue
        head.append((max(now + r.spec.grace_period_seconds, now), job_id, r))
    for job_id in stopping | skip:
        r = jobs.get(job_id)
        limit = None if r is None else r.spec.max_runtime_seconds
        if r is not None and limit is not None and r.started_at + limit > now:
            gone += 1
    # Jobs already past their limit release "now": among themselves, by id.
    p = 0
    while p < len(ends) and ends[p][0] <= now:
        job_id = ends[p][1]
        if job_id not in stopping and job_id not in skip:
            head.append((now, job_id, jobs[job_id]))
        p += 1
    unknown: list[tuple[float, RunningJob]] = []
    for r in placed:
        limit = r.spec.max_runtime_seconds
        if r.id in skip:
            continue
        if r.id in stopping:
            head.append((max(now + r.spec.grace_period_seconds, now), r.id, r))
        elif limit is None:
            unknown.append((math.inf, r))
        else:
            head.append((max(r.started_at + limit, now), r.id, r))
    head.sort(key=_end_and_id)

    def rest() -> Iterator[tuple[float, str, RunningJob]]:
        for i in range(p, len(ends)):
            end, job_id = ends[i]
            if job_id not in stopping and job_id not in skip:
                yield end, job_id, jobs[job_id]

    total = len(head) + len(ends) - p - gone
    merged = ((end, r) for end, _, r in heapq.merge(head, rest(), key=_end_and_id))

    def no_limit() -> list[tuple[float, RunningJob]]:
        ids = sorted(i for i in unlimited if i not in stopping and i not in skip)
        return sorted([(math.inf, jobs[i]) for i in ids] + unknown, key=lambda e: e[1].id)

    return Releases(merged, total), no_limit


def plan_reservation(
    pool: PoolState,
    job_id: str,
    flavor: str,
    shape: Shape,
    releases: tuple[Releases, Callable[[], list[tuple[float, RunningJob]]]],
    place: Callable[[Extra], list[tuple[int, int]] | None],
) -> Hold | None:
    known, unknown = releases
    got = earliest_fit(pool, flavor, shape, known, place) if known.total else None
    if got is None:
        # No runtime limits to go by: still hold the nodes it would get once everything
        # running ends, so small jobs do not keep it waiting forever.
        everything = known.first(known.total) + unknown()
        got = earliest_fit(pool, flavor, shape, Releases(everything, len(everything)), place)
        if got is None:
            return None
        got = (math.inf, got[1], None)
    start_at, placement, last = got
    nodes = tuple(i for i, _ in placement)
    return Hold(job_id, flavor, start_at, nodes, pool.hold(placement, shape), last)
