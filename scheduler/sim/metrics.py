"""Metrics of one replay: pure functions of job records and the timeline.

Definitions (also printed in the report):
- JCT = end - submit, over completed jobs; queueing delay = JCT - time the job held
  accelerators (all waiting, including after preemptions and failures).
- Slowdown = JCT / max(run time, 10 s) (bounded slowdown, so 5-second jobs do not
  dominate the mean); 1.0 is the no-queueing, no-failure limit.
- Utilization = accelerators held / capacity, integrated over the time some job was
  pending (the issue's definition); also over the arrival window. Bound = min(1, offered
  load), offered load = sum(accelerators x run time) / (capacity x arrival window); the
  window bound also counts only work that can run inside the window (see window_bound).
- Entitlement at each instant: every org gets min(demand, nominal); the rest of the
  capacity is water-filled (max-min by weight) among orgs that want more. An org's share
  and entitlement are their integrals over the arrival window as fractions of capacity.
- Guarantee violation: time an org held less than its nominal while it had a pending
  job that fits in the difference. The allowance is what one reclaim takes in this loop
  (see reclaim_allowance); episodes (maximal runs of violating time per org) longer than
  it are counted separately. An episode can chain several reclaims: while one is served,
  more of the org's jobs end or arrive and open new room, so it stays below nominal.
- Guarantee wait (per org, first owed, first served): what the org is owed at each
  instant is the most of its room below nominal that its pending jobs could fill together
  (a subset sum of their sizes; 0 unless it violates). Every increase of it is stamped
  with its time; every decrease (a placement, or the demand going away) settles the
  oldest stamps first. The wait at t is the age of the oldest unsettled stamp; its
  longest value, the number of maximal stretches in which it exceeds the allowance, and
  the org-seconds beyond the allowance are reported. So room that opens while earlier
  room is being reclaimed gets its own clock, but room nobody fills keeps aging. Owed
  time is infeasible where the orgs' guarantees cannot all hold at once: the sum over
  orgs of min(demand, nominal) is above capacity (quotas over-committed, or a pool that
  shrank); waits beyond the allowance are split into feasible and infeasible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from scheduler.sim.record import JobRecord, TimelineArrays

SLOWDOWN_FLOOR_S = 10.0


def percentile(values: Sequence[float] | np.ndarray, q: float) -> float:
    arr = np.asarray(values, dtype=float)
    return float(np.percentile(arr, q)) if arr.size else float("nan")


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


def completed(jobs: Sequence[JobRecord]) -> list[JobRecord]:
    return [j for j in jobs if j.end is not None]


def jct_stats(jobs: Sequence[JobRecord]) -> dict[str, float]:
    jct = np.array([j.jct for j in completed(jobs)], dtype=float)
    return {"avg": _mean(jct), "median": percentile(jct, 50), "p99": percentile(jct, 99)}


def queueing_stats(jobs: Sequence[JobRecord]) -> dict[str, float]:
    wait = np.array([max(0.0, j.jct - j.held_s) for j in completed(jobs)], dtype=float)
    return {"avg": _mean(wait), "p99": percentile(wait, 99)}


def slowdown_stats(jobs: Sequence[JobRecord], floor: float = SLOWDOWN_FLOOR_S) -> dict[str, float]:
    sd = np.array([j.jct / max(j.duration, floor) for j in completed(jobs)], dtype=float)
    return {"avg": _mean(sd), "median": percentile(sd, 50)}


def arrival_window(jobs: Sequence[JobRecord]) -> tuple[float, float]:
    submits = [j.submit for j in jobs]
    return min(submits), max(submits)


def offered_load(jobs: Sequence[JobRecord], capacity: int, window: tuple[float, float]) -> float:
    span = window[1] - window[0]
    work = sum(j.accelerators * j.duration for j in jobs)
    return float("inf") if span <= 0 else work / (capacity * span)


def window_bound(jobs: Sequence[JobRecord], capacity: int, window: tuple[float, float]) -> float:
    """An upper bound on utilization over ``window``: no job runs before its submission or
    longer than its run time, so only work that fits between submit and the window's end counts.
    Tighter than min(1, offered load) when jobs are long compared with the window."""
    span = window[1] - window[0]
    if span <= 0:
        return float("nan")
    work = sum(j.accelerators * min(j.duration, max(0.0, window[1] - j.submit)) for j in jobs)
    return min(1.0, work / (capacity * span))


def makespan(jobs: Sequence[JobRecord]) -> float:
    done = completed(jobs)
    if not done:
        return float("nan")
    return max(j.end for j in done if j.end is not None) - min(j.submit for j in jobs)


def window_weights(tl: TimelineArrays, window: tuple[float, float]) -> np.ndarray:
    """Each segment's length inside ``window``."""
    ends = tl.start + tl.dt
    return np.clip(np.minimum(ends, window[1]) - np.maximum(tl.start, window[0]), 0.0, None)


def utilization_while_pending(tl: TimelineArrays, capacity: int) -> float:
    w = tl.dt * (tl.pending > 0)
    total = w.sum()
    return float((tl.alloc.sum(axis=1) * w).sum() / (capacity * total)) if total > 0 else float("nan")


def utilization_in_window(tl: TimelineArrays, capacity: int, window: tuple[float, float]) -> float:
    w = window_weights(tl, window)
    total = w.sum()
    return float((tl.alloc.sum(axis=1) * w).sum() / (capacity * total)) if total > 0 else float("nan")


def entitlement(
    tl: TimelineArrays, capacity: int, nominal: Mapping[str, int], weights: Mapping[str, float]
) -> np.ndarray:
    """Per segment and org, the accelerators the org is entitled to (see module doc)."""
    demand = tl.demand
    nom = np.array([nominal.get(o, 0) for o in tl.orgs], dtype=float)
    wt = np.array([weights.get(o, 1.0) for o in tl.orgs], dtype=float)
    floor = np.minimum(demand, nom)
    target = np.minimum(float(capacity), demand.sum(axis=1))
    floor_sum = floor.sum(axis=1)
    lo = np.zeros(len(demand))
    hi = np.full(len(demand), float(capacity) / wt.min() if len(wt) else 0.0)
    for _ in range(60):
        mid = (lo + hi) / 2
        filled = np.maximum(floor, np.minimum(demand, mid[:, None] * wt)).sum(axis=1)
        under = filled < target
        lo = np.where(under, mid, lo)
        hi = np.where(under, hi, mid)
    ent = np.maximum(floor, np.minimum(demand, hi[:, None] * wt))
    # Over-committed quotas (sum of floors above capacity): scale the floors down.
    over = floor_sum > target
    if over.any():
        ent[over] = floor[over] * (target[over] / floor_sum[over])[:, None]
    return ent


def jain(values: Sequence[float] | np.ndarray) -> float:
    x = np.asarray(values, dtype=float)
    return float(x.sum() ** 2 / (len(x) * (x**2).sum())) if x.size and (x**2).sum() > 0 else float("nan")


def shares(
    tl: TimelineArrays,
    capacity: int,
    nominal: Mapping[str, int],
    weights: Mapping[str, float],
    window: tuple[float, float],
) -> dict[str, Any]:
    """Per-org share of capacity vs entitlement over ``window``; largest deviation; Jain's index
    of share / entitlement over orgs entitled to something."""
    w = window_weights(tl, window)
    denom = capacity * w.sum()
    if denom <= 0:
        return {"per_org": {}, "max_deviation": float("nan"), "jain": float("nan")}
    ent = entitlement(tl, capacity, nominal, weights)
    share = (tl.alloc * w[:, None]).sum(axis=0) / denom
    entitled = (ent * w[:, None]).sum(axis=0) / denom
    per_org = {
        o: {"share": float(s), "entitlement": float(e)}
        for o, s, e in zip(tl.orgs, share, entitled, strict=True)
    }
    mask = entitled > 1e-12
    return {
        "per_org": per_org,
        "max_deviation": float(np.abs(share - entitled).max()),
        "jain": jain(share[mask] / entitled[mask]),
    }


def guarantee_violations(tl: TimelineArrays, allowance_s: float = 0.0) -> dict[str, Any]:
    """Org-seconds in violation, episodes (maximal runs of violating segments), the longest one,
    and the episodes longer than ``allowance_s`` with their time beyond it."""
    per_org: dict[str, float] = {}
    episodes = 0
    longest = 0.0
    lengths: list[float] = []
    for k, org in enumerate(tl.orgs):
        flags = tl.violating[:, k]
        per_org[org] = float((tl.dt * flags).sum())
        run, inside = 0.0, False
        for flag, dt in zip(flags, tl.dt, strict=True):
            if flag:
                episodes += 0 if inside else 1
                run = run + dt if inside else dt
                inside = True
                longest = max(longest, run)
            elif inside:
                lengths.append(run)
                inside = False
        if inside:
            lengths.append(run)
    over = [length - allowance_s for length in lengths if length > allowance_s]
    return {
        "org_seconds": sum(per_org.values()),
        "episodes": episodes,
        "longest_s": longest,
        "allowance_s": allowance_s,
        "episodes_over_allowance": len(over),
        "org_seconds_over_allowance": sum(over),
        "per_org_s": per_org,
    }


def reclaim_allowance(interval_s: float, grace_s: float) -> float:
    """The longest wait one reclaim takes in a loop that runs a cycle at most every
    ``interval_s`` after an event: up to one interval until the cycle that sees the room
    (and reclaims it); the victims exit ``grace_s`` later; the cycle that places the job
    comes one interval after the reclaiming one when the grace is shorter than that (no
    cycle can run in between), else up to one interval after the exit."""
    return interval_s + (interval_s if grace_s <= interval_s else grace_s + interval_s)


def guarantee_waits(
    tl: TimelineArrays, nominal: Mapping[str, int], capacity: int, allowance_s: float
) -> dict[str, Any]:
    """Guarantee waits, first owed first served (see the module doc)."""
    nom = np.array([nominal.get(o, 0) for o in tl.orgs], dtype=np.int64)
    if tl.owed is not None:
        owed = tl.owed.astype(np.int64)
    else:  # not recorded: all of the room its pending accelerators cover (an upper bound)
        alloc = tl.alloc.astype(np.int64)
        room = np.maximum(nom[None, :] - alloc, 0)
        pend = np.maximum(tl.demand.astype(np.int64) - alloc, 0)
        owed = np.where(tl.violating, np.minimum(room, pend), 0)
    infeasible = np.minimum(tl.demand, nom[None, :]).sum(axis=1) > capacity
    # Prefix counts: "was any segment in [i, j) infeasible" in O(1).
    bad = np.concatenate(([0], np.cumsum(infeasible)))
    ends = tl.start + tl.dt
    end = float(ends[-1]) if len(ends) else 0.0
    longest, longest_org, longest_since = 0.0, None, None
    over = {"feasible": 0, "infeasible": 0}
    beyond = {"feasible": 0.0, "infeasible": 0.0}
    for k in range(len(tl.orgs)):
        col = owed[:, k]
        changes = np.flatnonzero(np.diff(col, prepend=0) != 0)
        fifo: list[list[float]] = []  # [stamp, amount], oldest first
        head = 0
        held = 0
        above = False
        tainted = False  # the current stretch beyond the allowance met infeasible time
        prev_i, prev_t = 0, 0.0
        for i in [*changes.tolist(), len(col)]:
            t = float(tl.start[i]) if i < len(col) else end
            if head < len(fifo):  # the span [prev_t, t) with the oldest stamp unchanged
                oldest = fifo[head][0]
                w0, w1 = prev_t - oldest, t - oldest
                if w1 > longest:  # which org, owed since when: where to look in a replay
                    longest, longest_org, longest_since = w1, tl.orgs[k], oldest
                if w1 > allowance_s:
                    if not above:
                        above, tainted = True, False
                    tainted = tainted or bool(bad[i] - bad[prev_i] > 0)
                    lo, hi = max(0.0, w0 - allowance_s), w1 - allowance_s
                    beyond["infeasible" if tainted else "feasible"] += (hi * hi - lo * lo) / 2
            if i == len(col):
                break
            new = int(col[i])
            if new > held:
                fifo.append([t, float(new - held)])
            else:
                gone = float(held - new)
                while gone > 0 and head < len(fifo):
                    take = min(gone, fifo[head][1])
                    fifo[head][1] -= take
                    gone -= take
                    if fifo[head][1] <= 0:
                        head += 1
            held = new
            still = head < len(fifo) and t - fifo[head][0] > allowance_s
            if above and not still:
                over["infeasible" if tainted else "feasible"] += 1
                above = False
            prev_i, prev_t = i, t
        if above:
            over["infeasible" if tainted else "feasible"] += 1
    return {
        "longest_wait_s": longest,
        "longest_wait_org": longest_org,
        "longest_wait_since_s": longest_since,
        "allowance_s": allowance_s,
        "waits_over_allowance": over["feasible"] + over["infeasible"],
        "waits_over_allowance_feasible": over["feasible"],
        "waits_over_allowance_infeasible": over["infeasible"],
        "org_seconds_over_allowance_feasible": beyond["feasible"],
        "org_seconds_over_allowance_infeasible": beyond["infeasible"],
    }


def losses(jobs: Sequence[JobRecord]) -> dict[str, float]:
    """Accelerator-hours lost to failures, to preemptions, to hangs and to stragglers; goodput (the
    effective training time ratio) = the useful share of all accelerator time held
    (useful = completed jobs' accelerators x run time)."""
    lost_fail = sum(j.lost_failure_acc_s for j in jobs) / 3600
    lost_pre = sum(j.lost_preemption_acc_s for j in jobs) / 3600
    lost_hang = sum(j.lost_hang_acc_s for j in jobs) / 3600
    lost_straggler = sum(j.lost_straggler_acc_s for j in jobs) / 3600
    held = sum(j.held_s * j.accelerators - j.unheld_acc_s for j in jobs)
    useful = sum(j.duration * j.accelerators for j in completed(jobs))
    return {
        "lost_failure_acc_h": lost_fail,
        "lost_preemption_acc_h": lost_pre,
        "lost_hang_acc_h": lost_hang,
        "hangs": sum(j.hangs for j in jobs),
        "lost_straggler_acc_h": lost_straggler,
        "stragglers": sum(j.stragglers for j in jobs),
        "goodput": useful / held if held > 0 else float("nan"),
    }
