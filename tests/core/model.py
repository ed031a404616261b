"""An independent, deliberately naive model of SEMANTICS.md's arithmetic for the tests.

Quota (borrowing ceiling, Kueue-style lending with private shares) and a fit oracle.
The fit oracle is exact because a gang's replicas are identical: a gang fits on a set of
nodes iff the replicas each node can take sum to at least ``replicas``; no bin packing.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from values.domain import Health, JobSpec, Node
from values.quotas import Org
from values.snapshot import PendingJob, RunningJob, Snapshot

Key = tuple[str, str]  # (org, flavor)
EPS = 1e-9


def capacity(snap: Snapshot) -> dict[str, int]:
    cap: dict[str, int] = dict.fromkeys((f.name for f in snap.flavors), 0)
    for n in snap.nodes:
        cap[n.flavor] = cap.get(n.flavor, 0) + n.accelerators
    return cap


def alloc(running: Iterable[RunningJob]) -> dict[Key, int]:
    """Accelerators held per (org, flavor); terminating jobs still hold theirs."""
    out: dict[Key, int] = defaultdict(int)
    for r in running:
        out[(r.spec.org, r.flavor)] += r.accelerators
    return out


def org_map(snap: Snapshot) -> dict[str, Org]:
    return {o.name: o for o in snap.orgs}


def ceiling(snap: Snapshot, o: Org, flavor: str) -> float:
    q = o.quota(flavor)
    if not snap.policy.borrowing:
        return q.nominal
    return math.inf if q.borrowing_limit is None else q.nominal + q.borrowing_limit


def shared_use(snap: Snapshot, held: dict[Key, int], flavor: str) -> tuple[int, int]:
    """(sum of orgs' shared use, size of the shared pool) on ``flavor``."""
    cap = capacity(snap).get(flavor, 0)
    private = {o.name: o.quota(flavor).guaranteed_private for o in snap.orgs}
    used = sum(max(0, held.get((name, flavor), 0) - p) for name, p in private.items())
    return used, cap - sum(private.values())


def lending_ok(snap: Snapshot, held: dict[Key, int], flavor: str) -> bool:
    used, shared = shared_use(snap, held, flavor)
    return used <= shared


def quota_verdict(snap: Snapshot, held: dict[Key, int], org: str, flavor: str, q: int) -> str:
    """'ok' | 'quota' | 'lending' for admitting ``q`` more accelerators of ``org``."""
    o = org_map(snap)[org]
    new = held.get((org, flavor), 0) + q
    if new > ceiling(snap, o, flavor):
        return "quota"
    after = dict(held)
    after[(org, flavor)] = new
    return "ok" if lending_ok(snap, after, flavor) else "lending"


# -- nodes ------------------------------------------------------------------------------


@dataclass
class Free:
    acc: float
    cpu: float
    mem: float


def free(snap: Snapshot, running: Iterable[RunningJob], empty: bool = False) -> dict[str, Free]:
    out = {n.name: Free(n.accelerators, n.cpu, n.memory_gb) for n in snap.nodes}
    if empty:
        return out
    for r in running:
        g = r.spec.gang
        for name, k in r.assignments:
            f = out[name]
            f.acc -= k * g.accelerators
            f.cpu -= k * g.cpu
            f.mem -= k * g.memory_gb
    return out


def take(room: dict[str, Free], spec: JobSpec, assignments: Iterable[tuple[str, int]]) -> None:
    g = spec.gang
    for name, k in assignments:
        f = room[name]
        f.acc -= k * g.accelerators
        f.cpu -= k * g.cpu
        f.mem -= k * g.memory_gb


def over_capacity(room: dict[str, Free]) -> list[str]:
    return [n for n, f in room.items() if f.acc < 0 or f.cpu < -EPS or f.mem < -EPS]


def slots(f: Free, spec: JobSpec) -> int:
    g = spec.gang
    n = g.replicas
    if g.accelerators:
        n = min(n, int(f.acc // g.accelerators))
    if g.cpu:
        n = min(n, int((f.cpu + EPS) // g.cpu))
    if g.memory_gb:
        n = min(n, int((f.mem + EPS) // g.memory_gb))
    return max(0, n)


def usable(n: Node, avoid: frozenset[str] = frozenset(), ignore_health: bool = False) -> bool:
    if ignore_health:
        return n.name not in avoid
    return not n.cordoned and n.health != Health.UNHEALTHY and n.name not in avoid


def fits(
    snap: Snapshot,
    room: dict[str, Free],
    spec: JobSpec,
    flavor: str,
    avoid: frozenset[str] = frozenset(),
    ignore_health: bool = False,
) -> bool:
    """Whether the gang fits on ``flavor``'s nodes given ``room`` (free capacity)."""
    need = spec.gang.replicas
    nodes = [n for n in snap.nodes if n.flavor == flavor and usable(n, avoid, ignore_health)]
    # A degraded node takes a gang only whole.
    if any(n.health == Health.DEGRADED and slots(room[n.name], spec) >= need for n in nodes):
        return True
    healthy = [n for n in nodes if ignore_health or n.health == Health.HEALTHY]
    topo = spec.topology
    if topo is None or topo.mode == "preferred":
        return sum(slots(room[n.name], spec) for n in healthy) >= need
    groups: dict[tuple[str, ...], int] = defaultdict(int)
    for n in healthy:
        key: tuple[str, ...] = (n.topology.zone, n.topology.spine)
        if topo.level == "rack":
            key = (*key, n.topology.rack)
        groups[key] += slots(room[n.name], spec)
    return any(v >= need for v in groups.values())


def never_fits(snap: Snapshot, spec: JobSpec, flavor: str) -> bool:
    return not fits(snap, free(snap, (), empty=True), spec, flavor, ignore_health=True)


def most_ever(snap: Snapshot, o: Org, flavor: str) -> float:
    """The most ``o`` could ever hold on ``flavor`` while quotas stay as they are: its
    ceiling, and at most its private share plus the whole shared pool."""
    shared = shared_use(snap, {}, flavor)[1]
    return min(ceiling(snap, o, flavor), o.quota(flavor).guaranteed_private + shared)


def no_quota(snap: Snapshot, spec: JobSpec, flavor: str) -> bool:
    o = org_map(snap)[spec.org]
    return spec.gang.total_accelerators > most_ever(snap, o, flavor)


def rejection_reasons(snap: Snapshot, job: PendingJob) -> tuple[set[str], bool]:
    """(reasons that apply, whether rejection is required).

    Rejection is required when one reason applies by itself; a job whose flavors fail
    each for a different reason (one never fits, another lacks quota) can never run but
    matches no reason literally, so either outcome is accepted for it.
    """
    s = job.spec
    if s.org not in org_map(snap):
        return {"unknown_org"}, True
    known = {f.name for f in snap.flavors}
    if any(f not in known for f in s.gang.flavors):
        return {"unknown_flavor"}, True
    reasons: set[str] = set()
    if all(never_fits(snap, s, f) for f in s.gang.flavors):
        reasons.add("never_fits")
    if all(no_quota(snap, s, f) for f in s.gang.flavors):
        reasons.add("no_quota")
    if reasons:
        return reasons, True
    hopeless = all(never_fits(snap, s, f) or no_quota(snap, s, f) for f in s.gang.flavors)
    return ({"never_fits", "no_quota"} if hopeless else set()), False


def victim_key(r: RunningJob) -> tuple[float, float, float, str]:
    """Victim order: lowest priority, most recent checkpoint (else start), latest start, id."""
    progress = r.last_checkpoint_at if r.last_checkpoint_at is not None else r.started_at
    return (r.priority, -progress, -r.started_at, r.id)
