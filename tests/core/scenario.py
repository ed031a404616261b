"""A small DSL for decision-core scenarios: build a pool, run ``decide``, compare.

Builders (``rack``, ``node``, ``org``, ``pending``, ``running``, ``snapshot``) keep the
scenarios short; ``Case`` + ``check`` are the table-driven runner in the style of Kueue's
``scheduleTestCase``: a case names its inputs and only the outcomes it cares about, except
placements and preemptions, which are compared exactly (an unexpected placement or victim
is a failure). ``apply``/``finish``/``submit`` advance a snapshot for multi-cycle stories.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from scheduler.core import decide
from values.decisions import (
    Decisions,
    PendingReason,
    Placement,
    PlaceReason,
    PreemptReason,
    RejectReason,
    Reservation,
)
from values.domain import Flavor, Gang, Health, JobSpec, Node, TopologyConstraint, TopologyPath
from values.quotas import FlavorQuota, Org
from values.snapshot import PendingJob, Policy, RunningJob, Snapshot

H100 = "h100"
A100 = "a100"
INF = float("inf")
_PRIORITY_NAMES = {100: "low", 500: "normal", 1000: "high"}


# -- pool -------------------------------------------------------------------------------


def node(
    name: str,
    flavor: str = H100,
    acc: int = 8,
    *,
    rack: str = "r0",
    spine: str = "s0",
    health: Health = Health.HEALTHY,
    cordoned: bool = False,
    cpu: float = 64.0,
    mem: float = 512.0,
) -> Node:
    return Node(
        name=name,
        flavor=flavor,
        accelerators=acc,
        cpu=cpu,
        memory_gb=mem,
        topology=TopologyPath(spine=spine, rack=rack),
        health=health,
        cordoned=cordoned,
    )


def rack(
    name: str,
    n: int,
    *,
    flavor: str = H100,
    acc: int = 8,
    spine: str = "s0",
    cpu: float = 64.0,
    mem: float = 512.0,
) -> list[Node]:
    """``n`` identical nodes named ``<rack>-n<i>`` in one rack."""
    return [node(f"{name}-n{i}", flavor, acc, rack=name, spine=spine, cpu=cpu, mem=mem) for i in range(n)]


def sick(n: Node, health: Health = Health.UNHEALTHY) -> Node:
    return n.model_copy(update={"health": health})


def cordon(n: Node) -> Node:
    return n.model_copy(update={"cordoned": True})


# -- orgs -------------------------------------------------------------------------------


def quota(nominal: int = 0, borrow: int | None = None, lend: int | None = None) -> FlavorQuota:
    return FlavorQuota(nominal=nominal, borrowing_limit=borrow, lending_limit=lend)


def org(name: str, weight: float = 1.0, **quotas: FlavorQuota | int) -> Org:
    """``org("a", h100=16)`` or ``org("a", h100=quota(16, borrow=0))``."""
    rows = {f: q if isinstance(q, FlavorQuota) else quota(q) for f, q in quotas.items()}
    return Org(name=name, weight=weight, quotas=rows)


# -- jobs -------------------------------------------------------------------------------

RACK_REQUIRED = TopologyConstraint(level="rack", mode="required")
RACK_PREFERRED = TopologyConstraint(level="rack", mode="preferred")
SPINE_REQUIRED = TopologyConstraint(level="spine", mode="required")


def spec(
    name: str,
    org: str = "a",
    *,
    replicas: int = 1,
    acc: int = 8,
    flavors: str | tuple[str, ...] = H100,
    prio: int = 500,
    runtime: float | None = None,
    topology: TopologyConstraint | None = None,
    preemptible: bool = True,
    cpu: float = 1.0,
    mem: float = 4.0,
    least: int | None = None,
) -> JobSpec:
    fl = (flavors,) if isinstance(flavors, str) else flavors
    return JobSpec(
        name=name,
        org=org,
        priority=_PRIORITY_NAMES.get(prio, "custom"),
        gang=Gang(
            replicas=replicas, min_replicas=least, accelerators=acc, flavors=fl, cpu=cpu, memory_gb=mem
        ),
        topology=topology,
        max_runtime_seconds=runtime,
        preemptible=preemptible,
    )


def pending(
    id: str,
    org: str = "a",
    *,
    replicas: int = 1,
    acc: int = 8,
    flavors: str | tuple[str, ...] = H100,
    prio: int = 500,
    submitted: float = 0.0,
    runtime: float | None = None,
    topology: TopologyConstraint | None = None,
    preemptible: bool = True,
    cpu: float = 1.0,
    mem: float = 4.0,
    eligible_at: float = 0.0,
    avoid: Iterable[str] = (),
    preempted_by: str | None = None,
    expedite: bool = False,
    prefer: Iterable[str] = (),
    least: int | None = None,
) -> PendingJob:
    """``least``: an elastic gang's minimum (``replicas`` is its most)."""
    s = spec(
        id,
        org,
        replicas=replicas,
        least=least,
        acc=acc,
        flavors=flavors,
        prio=prio,
        runtime=runtime,
        topology=topology,
        preemptible=preemptible,
        cpu=cpu,
        mem=mem,
    )
    return PendingJob(
        id=id,
        spec=s,
        priority=prio,
        submitted_at=submitted,
        eligible_at=eligible_at,
        avoid_nodes=frozenset(avoid),
        preempted_by=preempted_by,
        expedite=expedite,
        prefer_nodes=tuple(prefer),
    )


def running(
    id: str,
    org: str = "a",
    on: Mapping[str, int] | Iterable[str] = (),
    *,
    acc: int = 8,
    flavor: str = H100,
    prio: int = 500,
    started: float = 0.0,
    submitted: float | None = None,
    runtime: float | None = None,
    checkpoint: float | None = None,
    terminating: bool = False,
    preempted_for: str | None = None,
    preemptible: bool = True,
    cpu: float = 1.0,
    mem: float = 4.0,
    most: int | None = None,
    least: int | None = None,
) -> RunningJob:
    """A running job; ``on`` maps node -> replicas (a plain list means one replica each).
    An elastic gang runs with those replicas of its ``most``, ``least`` at the least."""
    assignments = tuple(on.items()) if isinstance(on, Mapping) else tuple((n, 1) for n in on)
    replicas = sum(r for _, r in assignments)
    s = spec(
        id,
        org,
        replicas=most or replicas,
        least=least,
        acc=acc,
        flavors=flavor,
        prio=prio,
        runtime=runtime,
        preemptible=preemptible,
        cpu=cpu,
        mem=mem,
    )
    return RunningJob(
        id=id,
        spec=s,
        priority=prio,
        submitted_at=started if submitted is None else submitted,
        started_at=started,
        flavor=flavor,
        assignments=assignments,
        last_checkpoint_at=checkpoint,
        terminating=terminating,
        preempted_for=preempted_for,
    )


def _flatten(nodes: Iterable[Node | Iterable[Node]]) -> list[Node]:
    out: list[Node] = []
    for n in nodes:
        if isinstance(n, Node):
            out.append(n)
        else:
            out.extend(n)
    return out


def snapshot(
    nodes: Iterable[Node | Iterable[Node]],
    orgs: Iterable[Org],
    running: Iterable[RunningJob] = (),
    pending: Iterable[PendingJob] = (),
    *,
    usage: Mapping[str, Mapping[str, float]] | None = None,
    policy: Policy | None = None,
    extra_flavors: Iterable[str] = (),
) -> Snapshot:
    flat = _flatten(nodes)
    names = sorted({n.flavor for n in flat} | set(extra_flavors))
    return Snapshot(
        flavors=tuple(Flavor(name=f) for f in names),
        nodes=tuple(flat),
        orgs=tuple(orgs),
        running=tuple(running),
        pending=tuple(pending),
        usage=usage or {},
        policy=policy or Policy(),
    )


# -- advancing a snapshot (multi-cycle stories) ----------------------------------------


def apply(
    snap: Snapshot,
    d: Decisions,
    now: float,
    *,
    preempted: Literal["terminate", "evict"] = "terminate",
) -> Snapshot:
    """Start placed jobs, drop rejected ones and act on preemptions.

    ``terminate``: victims keep their nodes, marked terminating for their beneficiary (what
    a real cycle sees until they exit). ``evict``: victims exit at once and go back to the
    queue with ``preempted_by`` set, as the control loop would requeue them.
    """
    by_id = {j.id: j for j in snap.pending}
    started = [
        RunningJob(
            id=p.job_id,
            spec=by_id[p.job_id].spec,
            priority=by_id[p.job_id].priority,
            submitted_at=by_id[p.job_id].submitted_at,
            started_at=now,
            flavor=p.flavor,
            assignments=p.assignments,
        )
        for p in d.placements
    ]
    gone = {p.job_id for p in d.placements} | {r.job_id for r in d.rejections}
    victims = {p.job_id: p for p in d.preemptions}
    still: list[RunningJob] = []
    requeued: list[PendingJob] = []
    for r in snap.running:
        v = victims.get(r.id)
        if v is None:
            still.append(r)
        elif preempted == "terminate":
            still.append(dataclasses.replace(r, terminating=True, preempted_for=v.beneficiary))
        else:
            requeued.append(requeue(r, now, preempted_by=v.beneficiary))
    waiting = [j for j in snap.pending if j.id not in gone]
    return dataclasses.replace(snap, running=(*still, *started), pending=(*waiting, *requeued))


def requeue(r: RunningJob, now: float, *, preempted_by: str | None) -> PendingJob:
    return PendingJob(
        id=r.id,
        spec=r.spec,
        priority=r.priority,
        submitted_at=r.submitted_at,
        attempt=1,
        eligible_at=now,
        preempted_by=preempted_by,
    )


def finish(snap: Snapshot, *ids: str) -> Snapshot:
    """The named running jobs exit (done, or victims that finished terminating)."""
    return dataclasses.replace(snap, running=tuple(r for r in snap.running if r.id not in ids))


def expire(snap: Snapshot, now: float) -> tuple[Snapshot, list[str]]:
    """Jobs whose runtime limit has passed by ``now`` exit; returns their ids too."""
    done = [r.id for r in snap.running if r.expected_end is not None and r.expected_end <= now]
    return finish(snap, *done), done


def submit(snap: Snapshot, *jobs: PendingJob) -> Snapshot:
    return dataclasses.replace(snap, pending=(*snap.pending, *jobs))


# -- the table-driven runner ------------------------------------------------------------


@dataclass(frozen=True)
class Placed:
    """A wanted placement; unset fields are not checked."""

    on: frozenset[str] | None = None
    reason: PlaceReason | None = None
    flavor: str | None = None
    assignments: tuple[tuple[str, int], ...] | None = None


def on(*nodes: str, reason: PlaceReason | None = None, flavor: str | None = None) -> Placed:
    return Placed(on=frozenset(nodes), reason=reason, flavor=flavor)


ANY = Placed()


@dataclass(frozen=True)
class Pend:
    reason: PendingReason
    blocked_by: str | None = None
    estimated_start: float | None = None
    check_estimate: bool = False  # compare estimated_start even when the wanted one is None


@dataclass(frozen=True)
class Res:
    nodes: frozenset[str] | None = None
    start_at: float | None = None
    flavor: str | None = None


@dataclass(frozen=True)
class Case:
    name: str
    snap: Snapshot
    now: float = 0.0
    placed: Mapping[str, Placed] = field(default_factory=dict)
    preempted: Mapping[str, tuple[PreemptReason, str | None]] = field(default_factory=dict)
    # None: reservations are not checked; a mapping: exactly these.
    reserved: Mapping[str, Res] | None = None
    rejected: Mapping[str, RejectReason] = field(default_factory=dict)
    pending: Mapping[str, PendingReason | Pend] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.name


def describe(d: Decisions) -> str:
    lines = [f"placed {p.job_id} {p.flavor} {p.assignments} {p.reason}" for p in d.placements]
    lines += [f"preempt {p.job_id} {p.reason} for {p.beneficiary}" for p in d.preemptions]
    lines += [f"reserve {r.job_id} {r.flavor} {r.nodes} at {r.start_at}" for r in d.reservations]
    lines += [f"reject {r.job_id} {r.reason}" for r in d.rejections]
    lines += [
        f"pending {j} {s.reason} by={s.blocked_by} eta={s.estimated_start}" for j, s in d.pending.items()
    ]
    return "\n  ".join(["decisions:", *lines])


def describe_snapshot(snap: Snapshot, now: float) -> str:
    """A compact, readable dump of a snapshot for failure reports."""
    lines = [f"now={now} policy={snap.policy}"]
    for n in snap.nodes:
        flags = f"{n.health.value}{' cordoned' if n.cordoned else ''}"
        lines.append(f"node {n.name} {n.flavor} acc={n.accelerators} cpu={n.cpu} {flags}")
    lines += [f"org {o.name} w={o.weight} {dict(o.quotas)}" for o in snap.orgs]
    for r in snap.running:
        g = r.spec.gang
        lines.append(
            f"running {r.id} org={r.spec.org} {r.flavor} {g.replicas}x{g.accelerators} cpu={g.cpu} "
            f"on={r.assignments} prio={r.priority} start={r.started_at} end={r.expected_end} "
            f"ckpt={r.last_checkpoint_at} preemptible={r.spec.preemptible} term={r.terminating} "
            f"for={r.preempted_for}"
        )
    for j in snap.pending:
        g = j.spec.gang
        lines.append(
            f"pending {j.id} org={j.spec.org} {g.flavors} {g.replicas}x{g.accelerators} cpu={g.cpu} "
            f"prio={j.priority} sub={j.submitted_at} limit={j.spec.max_runtime_seconds} "
            f"topo={j.spec.topology} elig={j.eligible_at} avoid={sorted(j.avoid_nodes)} "
            f"by={j.preempted_by} nominated={j.nominated} expedite={j.expedite} prefer={j.prefer_nodes}"
        )
    lines.append(f"usage={dict(snap.usage)}")
    return "\n  ".join(["snapshot:", *lines])


def check(case: Case) -> Decisions:
    """Run ``decide`` on the case and assert every outcome it names."""
    d = decide(case.snap, case.now)
    why = describe(d)
    got_placed = {p.job_id: p for p in d.placements}
    assert set(got_placed) == set(case.placed), f"placed jobs differ\n  {why}"
    for job, want in case.placed.items():
        _check_placement(job, want, got_placed[job], why)
    got_pre = {p.job_id: (p.reason, p.beneficiary) for p in d.preemptions}
    assert len(got_pre) == len(d.preemptions), f"a job is preempted twice\n  {why}"
    assert got_pre == dict(case.preempted), f"preemptions differ\n  {why}"
    if case.reserved is not None:
        got_res = {r.job_id: r for r in d.reservations}
        assert set(got_res) == set(case.reserved), f"reservations differ\n  {why}"
        for job, res in case.reserved.items():
            _check_reservation(job, res, got_res[job], why)
    got_rej = {r.job_id: r.reason for r in d.rejections}
    assert got_rej == dict(case.rejected), f"rejections differ\n  {why}"
    for job, want_p in case.pending.items():
        want_p = want_p if isinstance(want_p, Pend) else Pend(want_p)
        got = d.pending.get(job)
        assert got is not None, f"{job} has no pending status\n  {why}"
        assert got.reason == want_p.reason, f"{job}: {got.reason} != {want_p.reason}\n  {why}"
        if want_p.blocked_by is not None:
            assert got.blocked_by == want_p.blocked_by, f"{job} blocked_by\n  {why}"
        if want_p.estimated_start is not None or want_p.check_estimate:
            assert got.estimated_start == want_p.estimated_start, f"{job} estimated_start\n  {why}"
    return d


def _check_placement(job: str, want: Placed, got: Placement, why: str) -> None:
    nodes = frozenset(n for n, _ in got.assignments)
    if want.on is not None:
        assert nodes == want.on, f"{job} on {sorted(nodes)}, wanted {sorted(want.on)}\n  {why}"
    if want.reason is not None:
        assert got.reason == want.reason, f"{job} placed as {got.reason}, wanted {want.reason}\n  {why}"
    if want.flavor is not None:
        assert got.flavor == want.flavor, f"{job} on flavor {got.flavor}\n  {why}"
    if want.assignments is not None:
        assert got.assignments == want.assignments, f"{job} assignments\n  {why}"


def _check_reservation(job: str, want: Res, got: Reservation, why: str) -> None:
    if want.nodes is not None:
        assert frozenset(got.nodes) == want.nodes, f"{job} reserves {got.nodes}\n  {why}"
    if want.start_at is not None:
        assert got.start_at == want.start_at, f"{job} reservation starts {got.start_at}\n  {why}"
    if want.flavor is not None:
        assert got.flavor == want.flavor, f"{job} reservation flavor\n  {why}"
