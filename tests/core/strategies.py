"""Hypothesis strategies for random but consistent pools: nodes of a few flavors in
spines and racks with random health and cordons, orgs with random quotas, running jobs
placed greedily within node capacity and quota, and a random pending queue."""

from __future__ import annotations

import dataclasses
from collections import defaultdict

from hypothesis import strategies as st

from values.domain import Health, Node, TopologyConstraint
from values.quotas import FlavorQuota, Org
from values.snapshot import Ordering, PendingJob, Policy, RunningJob, Snapshot

from . import model as m
from .scenario import node, pending, snapshot, spec

NOW = 1000.0
FLAVORS = ("h100", "a100", "mi300")
ORGS = ("a", "b", "c", "d")
TOPOLOGIES = (
    None,
    None,
    TopologyConstraint(level="rack", mode="required"),
    TopologyConstraint(level="spine", mode="required"),
    TopologyConstraint(level="rack", mode="preferred"),
)


@st.composite
def nodes_of(draw: st.DrawFn, flavor: str) -> list[Node]:
    out = []
    for s in range(draw(st.integers(1, 2))):
        for r in range(draw(st.integers(1, 2))):
            rack_name = f"{flavor}-s{s}-r{r}"
            for i in range(draw(st.integers(1, 3))):
                out.append(
                    node(
                        f"{rack_name}-n{i}",
                        flavor,
                        draw(st.sampled_from((4, 8, 8))),
                        rack=rack_name,
                        spine=f"{flavor}-s{s}",
                        health=draw(
                            st.sampled_from((Health.HEALTHY,) * 6 + (Health.DEGRADED, Health.UNHEALTHY))
                        ),
                        cordoned=draw(st.integers(0, 9)) == 0,
                        cpu=draw(st.sampled_from((32.0, 64.0))),
                    )
                )
    return out


@st.composite
def orgs_for(draw: st.DrawFn, caps: dict[str, int]) -> list[Org]:
    names = draw(st.lists(st.sampled_from(ORGS), min_size=1, max_size=4, unique=True))
    out = []
    for name in sorted(names):
        quotas = {}
        for f, cap in caps.items():
            if draw(st.integers(0, 4)) == 0:
                continue  # no row: nominal 0, may only borrow
            nominal = draw(st.integers(0, cap // 4)) * 4
            borrow = draw(st.one_of(st.none(), st.none(), st.integers(0, cap)))
            lend = draw(st.one_of(st.none(), st.integers(0, nominal)))
            quotas[f] = FlavorQuota(nominal=nominal, borrowing_limit=borrow, lending_limit=lend)
        out.append(Org(name=name, weight=draw(st.sampled_from((1.0, 1.0, 2.0))), quotas=quotas))
    return out


MOSTLY = st.sampled_from((True, True, True, False))
policies = st.builds(
    Policy,
    ordering=st.sampled_from((Ordering.FAIR,) * 4 + (Ordering.FIFO, Ordering.PRIORITY)),
    borrowing=MOSTLY,
    reclaim=MOSTLY,
    priority_preemption=MOSTLY,
    backfill=MOSTLY,
    strict_order=st.integers(0, 5).map(lambda x: x == 0),
    move_off_unhealthy=MOSTLY,
)


def place_greedily(snap: Snapshot, job: RunningJob, flavor: str) -> RunningJob | None:
    """``job`` with node assignments on ``flavor`` (first fit), or None if no room/quota."""
    held = m.alloc(snap.running)
    if m.quota_verdict(snap, held, job.spec.org, flavor, job.spec.gang.total_accelerators) != "ok":
        return None
    room = m.free(snap, snap.running)
    left, out = job.spec.gang.replicas, []
    for n in snap.nodes:
        if n.flavor != flavor or left == 0:
            continue
        k = min(left, m.slots(room[n.name], job.spec))
        if k:
            out.append((n.name, k))
            left -= k
    if left:
        return None
    return dataclasses.replace(job, flavor=flavor, assignments=tuple(out))


@st.composite
def running_jobs(draw: st.DrawFn, snap: Snapshot, count: int, prefix: str = "r") -> Snapshot:
    flavors = [f.name for f in snap.flavors]
    orgs = [o.name for o in snap.orgs]
    for i in range(count):
        f = draw(st.sampled_from(flavors))
        started = draw(st.floats(0, NOW, allow_nan=False))
        prio = draw(st.sampled_from((100, 500, 1000)))
        job = RunningJob(
            id=f"{prefix}{i}",
            spec=spec(
                f"{prefix}{i}",
                draw(st.sampled_from(orgs)),
                replicas=draw(st.integers(1, 3)),
                acc=draw(st.sampled_from((1, 2, 4, 8))),
                flavors=f,
                prio=prio,
                runtime=draw(
                    st.one_of(
                        st.none(), st.floats(NOW - started + 1, 4000), st.floats(NOW - started + 1, 1500)
                    )
                ),
                preemptible=draw(st.integers(0, 5)) > 0,
            ),
            priority=prio,
            submitted_at=started,
            started_at=started,
            flavor=f,
            assignments=(),
            last_checkpoint_at=draw(st.one_of(st.none(), st.floats(started, NOW))),
        )
        placed = place_greedily(snap, job, f)
        if placed is not None:
            snap = dataclasses.replace(snap, running=(*snap.running, placed))
    return snap


@st.composite
def pending_job(draw: st.DrawFn, snap: Snapshot, id: str, now: float = NOW, big: bool = False) -> PendingJob:
    flavors = [f.name for f in snap.flavors]
    orgs = [o.name for o in snap.orgs]
    org = draw(st.sampled_from(orgs * 5 + ["ghost"]))
    accepted = draw(st.lists(st.sampled_from(flavors), min_size=1, max_size=2, unique=True))
    if draw(st.integers(0, 15)) == 0:
        accepted.append("tpu")
    node_names = [n.name for n in snap.nodes]
    running_ids = [r.id for r in snap.running]
    # Back after an infrastructure failure: first in its org and priority, some nodes preferred.
    expedite = draw(st.integers(0, 4)) == 0
    return pending(
        id,
        org,
        # Big: multi-node gangs, where packing and topology matter.
        replicas=draw(st.sampled_from((2, 3, 4) if big else (1, 1, 2, 3, 4))),
        acc=draw(st.sampled_from((4, 8) if big else (1, 2, 4, 8))),
        flavors=tuple(accepted),
        prio=draw(st.sampled_from((100, 500, 1000))),
        submitted=draw(st.floats(0, now, allow_nan=False)),
        runtime=draw(st.one_of(st.none(), st.floats(10, 3000), st.floats(10, 500))),
        topology=draw(st.sampled_from(TOPOLOGIES[1:] if big else TOPOLOGIES)),
        cpu=draw(st.sampled_from((1.0, 1.0, 8.0, 24.0))),
        eligible_at=draw(st.sampled_from((0.0,) * 7 + (now + 100,))),
        avoid=draw(st.lists(st.sampled_from(node_names), max_size=2)),
        preempted_by=draw(st.one_of(st.none(), st.sampled_from(running_ids))) if running_ids else None,
        expedite=expedite,
        prefer=draw(st.lists(st.sampled_from(node_names), max_size=4, unique=True)) if expedite else (),
    )


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    flavors = draw(st.lists(st.sampled_from(FLAVORS), min_size=1, max_size=3, unique=True))
    nodes = [n for f in flavors for n in draw(nodes_of(f))]
    caps: dict[str, int] = defaultdict(int)
    for n in nodes:
        caps[n.flavor] += n.accelerators
    orgs = draw(orgs_for(dict(caps)))
    usage = {o.name: {f: draw(st.floats(0, 2e6)) for f in flavors} for o in orgs if draw(st.booleans())}
    snap = snapshot(nodes, orgs, usage=usage, policy=draw(policies))
    snap = draw(running_jobs(snap, draw(st.integers(0, 14))))
    jobs = [draw(pending_job(snap, f"p{i}")) for i in range(draw(st.integers(0, 8)))]
    snap = dataclasses.replace(snap, pending=tuple(jobs))
    return draw(with_terminating(snap))


@st.composite
def with_terminating(draw: st.DrawFn, snap: Snapshot) -> Snapshot:
    """Mark a few running jobs as already stopping, some for a pending job."""
    pending_ids = [j.id for j in snap.pending]
    out = []
    for r in snap.running:
        if draw(st.integers(0, 6)) == 0:
            target = draw(st.sampled_from([None, *pending_ids]))
            r = dataclasses.replace(r, terminating=True, preempted_for=target)
        out.append(r)
    return dataclasses.replace(snap, running=tuple(out))


@st.composite
def contended_snapshots(draw: st.DrawFn) -> Snapshot:
    """A full pool where borrowers hold what others are entitled to: reclaim, priority
    preemption and reservations happen here, not in the mostly idle random pools."""
    flavors = draw(st.lists(st.sampled_from(FLAVORS[:2]), min_size=1, max_size=2, unique=True))
    nodes = [
        n.model_copy(update={"health": Health.HEALTHY, "cordoned": False}) if draw(st.integers(0, 5)) else n
        for f in flavors
        for n in draw(nodes_of(f))
    ]
    caps: dict[str, int] = defaultdict(int)
    for n in nodes:
        caps[n.flavor] += n.accelerators
    half = {f: (c // 8) * 4 for f, c in caps.items()}
    orgs = [
        Org(name="a", quotas={f: FlavorQuota(nominal=half[f]) for f in flavors}),
        Org(name="b", quotas={f: FlavorQuota(nominal=caps[f] - half[f]) for f in flavors}),
        Org(name="c", weight=draw(st.sampled_from((1.0, 2.0)))),
    ]
    snap = snapshot(nodes, orgs, policy=draw(policies))
    snap = draw(running_jobs(snap, draw(st.integers(4, 16))))
    jobs = [draw(pending_job(snap, f"p{i}", big=draw(st.booleans()))) for i in range(draw(st.integers(1, 6)))]
    snap = dataclasses.replace(snap, pending=tuple(jobs))
    return draw(with_terminating(snap))


any_snapshots = st.one_of(snapshots(), contended_snapshots())
