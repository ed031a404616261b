"""EASY backfill: when will the blocked head gang fit, and on which nodes.

Running jobs release their nodes at their expected end (start + max_runtime; a job being
stopped, after its grace period). The reservation is the earliest prefix of those
releases after which the gang fits, found by doubling then bisecting so a pool with tens
of thousands of running jobs costs a few placement searches, not one per job.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import itemgetter

from scheduler.core.pool import PoolState, Shape
from scheduler.snapshot import RunningJob

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


def earliest_fit(
    pool: PoolState,
    flavor: str,
    shape: Shape,
    releases: list[tuple[float, RunningJob]],
    place: Callable[[Extra], list[tuple[int, int]] | None],
) -> tuple[float, list[tuple[int, int]]] | None:
    """(start time, placement) after the fewest releases, in end-time order."""
    need = shape.replicas * shape.acc
    ordered = [r for _, r in releases]
    freed = pool.free_total(flavor)  # what is free now counts towards the gang too
    k_min = len(ordered)
    for k, r in enumerate(ordered, 1):  # no search before enough accelerators come free
        freed += r.accelerators
        if freed >= need:
            k_min = k
            break

    # Releases are added to a running total as k grows, and bisection starts from a copy
    # of the last prefix known not to fit: each job is added O(log n) times at most,
    # instead of rebuilding every prefix from scratch.
    def extend(extra: Extra, start: int, end: int) -> Extra:
        return pool.release_of(ordered[start:end], into=extra)

    lo, hi, step = k_min - 1, k_min, 1
    lo_extra = extend({}, 0, lo)
    hi_extra = extend(dict(lo_extra), lo, hi)
    found = place(hi_extra)
    while found is None and hi < len(ordered):
        lo, lo_extra, step = hi, hi_extra, step * 2
        hi = min(len(ordered), hi + step)
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
    return releases[hi - 1][0], found


def plan_reservation(
    pool: PoolState,
    job_id: str,
    flavor: str,
    shape: Shape,
    running: list[RunningJob],
    stopping: set[str],
    now: float,
    place: Callable[[Extra], list[tuple[int, int]] | None],
) -> Hold | None:
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
    known = [(end, r) for end, _, r in keyed]
    unknown.sort(key=lambda e: e[1].id)
    got = earliest_fit(pool, flavor, shape, known, place) if known else None
    if got is None:
        # No runtime limits to go by: still hold the nodes it would get once everything
        # running ends, so small jobs do not keep it waiting forever.
        got = earliest_fit(pool, flavor, shape, known + unknown, place)
        if got is None:
            return None
        got = (math.inf, got[1])
    start_at, placement = got
    return Hold(job_id, flavor, start_at, tuple(i for i, _ in placement), pool.hold(placement, shape))
