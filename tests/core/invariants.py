"""The invariants at the end of SEMANTICS.md, checked on any (snapshot, decisions) pair.

Each check raises AssertionError with the job and the rule; property tests call
``check_invariants`` after every ``decide``.
"""

from __future__ import annotations

from collections import defaultdict

from values.decisions import Decisions, PendingReason, PlaceReason, PreemptReason
from values.domain import Health, Node
from values.snapshot import Ordering, PendingJob, RunningJob, Snapshot

from . import model as m

# Known deviations of the core from SEMANTICS.md, each pinned by a strict-xfail scenario
# test. The property tests tolerate them so that they keep finding *other* violations;
# drop a name here once the core is fixed (its xfail test then fails as XPASS anyway).
TOLERATED = frozenset(
    {
        # SEMANTICS: a job whose victims still stop starts elsewhere if it fits now
        # (test_preemption.py::test_job_with_terminating_victims_starts_elsewhere_if_it_fits_now)
        "placed-while-victims-terminate",
    }
)


def check_invariants(snap: Snapshot, d: Decisions, now: float) -> None:
    check_statuses(snap, d, now)
    check_placements(snap, d)
    check_capacity_and_quota(snap, d)
    check_preemptions(snap, d, now)
    check_reservations(snap, d)
    check_nominal_guarantee(snap, d, now)
    check_backfill(snap, d, now)
    check_strict_order(snap, d, now)


def check_statuses(snap: Snapshot, d: Decisions, now: float) -> None:
    """Every pending job: placed, rejected or exactly one status; rejections as defined."""
    ids = [j.id for j in snap.pending]
    placed = [p.job_id for p in d.placements]
    rejected = {r.job_id: r.reason for r in d.rejections}
    assert len(set(placed)) == len(placed), "a job is placed twice"
    assert len(rejected) == len(d.rejections), "a job is rejected twice"
    parts = [set(placed), set(rejected), set(d.pending)]
    assert set().union(*parts) == set(ids), "some pending job has no outcome, or an unknown id has one"
    assert sum(len(p) for p in parts) == len(ids), "a job has more than one outcome"
    for job in snap.pending:
        reasons, required = m.rejection_reasons(snap, job)
        if job.id in rejected:
            assert rejected[job.id].value in reasons, f"{job.id} rejected as {rejected[job.id]}"
        else:
            assert not required, f"{job.id} should be rejected ({reasons})"
        status = d.pending.get(job.id)
        if job.id in rejected:
            continue
        if job.eligible_at > now:
            assert status is not None and status.reason == PendingReason.BACKOFF, f"{job.id} in backoff"
            assert status.estimated_start == job.eligible_at, f"{job.id} backoff estimate"
        elif status is not None:
            assert status.reason != PendingReason.BACKOFF, f"{job.id} BACKOFF though eligible"


def _index(snap: Snapshot) -> tuple[dict[str, PendingJob], dict[str, RunningJob]]:
    return {j.id: j for j in snap.pending}, {r.id: r for r in snap.running}


def check_placements(snap: Snapshot, d: Decisions) -> None:
    """Gangs whole, on eligible nodes of the chosen flavor, within a required domain."""
    jobs, _ = _index(snap)
    nodes = {n.name: n for n in snap.nodes}
    for p in d.placements:
        job = jobs[p.job_id]
        g = job.spec.gang
        assert p.flavor in g.flavors, f"{p.job_id} placed on a flavor it does not accept"
        assert sum(k for _, k in p.assignments) == g.replicas, f"{p.job_id}: partial gang"
        assert all(k > 0 for _, k in p.assignments), f"{p.job_id}: empty assignment"
        names = [n for n, _ in p.assignments]
        assert len(set(names)) == len(names), f"{p.job_id}: a node listed twice"
        for name in names:
            n = nodes[name]
            assert n.flavor == p.flavor, f"{p.job_id}: node {name} is not {p.flavor}"
            assert not n.cordoned, f"{p.job_id}: on cordoned {name}"
            assert n.health != Health.UNHEALTHY, f"{p.job_id}: on unhealthy {name}"
            assert name not in job.avoid_nodes, f"{p.job_id}: on avoided {name}"
            if n.health == Health.DEGRADED:
                assert len(names) == 1, f"{p.job_id}: multi-node gang on degraded {name}"
        t = job.spec.topology
        if t is not None and t.mode == "required":
            domains = {_domain(nodes[name], t.level) for name in names}
            assert len(domains) == 1, f"{p.job_id}: spans {domains}, {t.level} required"


def _domain(n: Node, level: str) -> tuple[str, ...]:
    key = (n.topology.zone, n.topology.spine)
    return (*key, n.topology.rack) if level == "rack" else key


def promises(snap: Snapshot, d: Decisions) -> tuple[dict[m.Key, int], dict[m.Key, int]]:
    """Quota booked by this cycle's preemptions, as (credits, charges): each victim
    credited, each beneficiary charged its request on its victims' flavor (SEMANTICS.md:
    claims are treated as granted). Which came before a given placement is unknown."""
    jobs, run = _index(snap)
    credits: dict[m.Key, int] = defaultdict(int)
    charges: dict[m.Key, int] = defaultdict(int)
    charged: set[str] = set()
    for p in d.preemptions:
        if p.beneficiary is None:
            continue
        v = run[p.job_id]
        credits[(v.spec.org, v.flavor)] -= v.accelerators
        b = jobs.get(p.beneficiary)
        if b is not None and b.id not in charged:
            charged.add(b.id)
            charges[(b.spec.org, v.flavor)] += b.spec.gang.total_accelerators
    return credits, charges


def check_capacity_and_quota(snap: Snapshot, d: Decisions) -> None:
    """After applying placements: no node over capacity; with this cycle's preemption
    claims booked, orgs within their ceilings and the lending rule; each placement's
    reason and ``borrowed`` consistent with the org's allocation."""
    jobs, _ = _index(snap)
    room = m.free(snap, snap.running)
    held = m.alloc(snap.running)
    orgs = m.org_map(snap)
    credits, charges = promises(snap, d)
    within_before = {k for k, v in held.items() if v <= m.ceiling(snap, orgs[k[0]], k[1])}
    lending_before = {f.name: m.lending_ok(snap, held, f.name) for f in snap.flavors}
    for p in d.placements:
        job = jobs[p.job_id]
        m.take(room, job.spec, p.assignments)
        key = (job.spec.org, p.flavor)
        held[key] += job.spec.gang.total_accelerators
        nominal = orgs[job.spec.org].quota(p.flavor).nominal
        # The booked alloc when it was placed lies between these (promises of the cycle
        # made before it are unknown: charges raise it, credits lower it).
        low = held[key] + credits.get(key, 0)
        high = held[key] + charges.get(key, 0)
        if p.reason == PlaceReason.NOMINAL:
            assert low <= nominal, f"{p.job_id}: NOMINAL but org above nominal"
        elif p.reason == PlaceReason.BORROWED:
            assert high > nominal, f"{p.job_id}: BORROWED but org within nominal"
        else:
            assert job.spec.max_runtime_seconds is not None, f"{p.job_id}: BACKFILL without a limit"
        # borrowed: what the org really holds above nominal, promises aside.
        assert p.borrowed == max(0, held[key] - nominal), f"{p.job_id}: borrowed={p.borrowed}"
    assert not m.over_capacity(room), f"nodes over capacity: {m.over_capacity(room)}"
    for key in {*credits, *charges}:
        held[key] += credits.get(key, 0) + charges.get(key, 0)
    for key in within_before:
        assert held[key] <= m.ceiling(snap, orgs[key[0]], key[1]), f"{key}: org over its ceiling"
    for f, ok_before in lending_before.items():
        if ok_before:
            assert m.lending_ok(snap, held, f), f"lending rule broken on {f}"


def live_alloc(snap: Snapshot) -> dict[m.Key, int]:
    """What orgs hold through running jobs that are not stopping (for 'is a borrower')."""
    return m.alloc(r for r in snap.running if not r.terminating)


def check_preemptions(snap: Snapshot, d: Decisions, now: float) -> None:
    jobs, run = _index(snap)
    live = live_alloc(snap)
    # The beneficiary's booked alloc when it reclaimed is at least this (credits only lower it).
    low = m.alloc(snap.running)
    for key, delta in promises(snap, d)[0].items():
        low[key] += delta
    orgs = m.org_map(snap)
    victims = [p.job_id for p in d.preemptions]
    assert len(set(victims)) == len(victims), "a job is preempted twice"
    placed = {p.job_id for p in d.placements}
    rejected = {r.job_id for r in d.rejections}
    already = {r.preempted_for for r in snap.running if r.terminating and r.preempted_for}
    for p in d.preemptions:
        v = run.get(p.job_id)
        assert v is not None and not v.terminating, f"{p.job_id}: not a running, live job"
        if p.reason == PreemptReason.HEALTH:
            assert p.beneficiary is None and snap.policy.move_off_unhealthy
            bad = {n.name for n in snap.nodes if n.health == Health.UNHEALTHY}
            assert any(n in bad for n, _ in v.assignments), f"{p.job_id}: HEALTH but on healthy nodes"
            continue
        b = jobs.get(p.beneficiary or "")
        assert b is not None, f"{p.job_id}: beneficiary {p.beneficiary} is not pending"
        assert b.id not in placed and b.id not in rejected, f"{b.id}: beneficiary placed or rejected"
        status = d.pending.get(b.id)
        assert status is not None and status.reason == PendingReason.PREEMPTING, f"{b.id} not PREEMPTING"
        assert v.spec.preemptible, f"{p.job_id} is not preemptible"
        assert v.id != b.preempted_by, f"{b.id} preempts {v.id} back (ping-pong)"
        assert b.id not in already, f"{b.id} already has terminating victims"
        assert v.flavor in b.spec.gang.flavors, f"{p.job_id}: flavor {b.id} does not accept"
        if p.reason == PreemptReason.RECLAIM:
            assert snap.policy.reclaim
            nominal = orgs[v.spec.org].quota(v.flavor).nominal
            assert live[(v.spec.org, v.flavor)] > nominal, f"{p.job_id}: its org is not borrowing"
            bq = orgs[b.spec.org].quota(v.flavor).nominal
            need = b.spec.gang.total_accelerators
            assert low[(b.spec.org, v.flavor)] + need <= bq, f"{b.id} reclaims beyond nominal"
        else:
            assert snap.policy.priority_preemption
            assert v.spec.org == b.spec.org and v.priority < b.priority, f"{p.job_id}: PRIORITY rule"
    for b_id in {p.beneficiary for p in d.preemptions if p.beneficiary is not None}:
        assert _fits_after(snap, d, jobs[b_id]), f"{b_id}: victims preempted but it would not fit"
    for r in snap.running:
        waiting = jobs.get(r.preempted_for or "")
        if r.terminating and waiting and waiting.id not in rejected and waiting.eligible_at <= now:
            s = d.pending.get(waiting.id)
            if d.placed(waiting.id) is not None and "placed-while-victims-terminate" in TOLERATED:
                continue
            assert s is not None and s.reason == PendingReason.PREEMPTING, f"{waiting.id} is {s}"


def _fits_after(snap: Snapshot, d: Decisions, b: PendingJob) -> bool:
    """Whether ``b``'s gang fits on the nodes once every victim of this cycle has exited
    and this cycle's placements run (its quota is part of the booked check)."""
    jobs, _ = _index(snap)
    gone = set(d.preempted_ids())
    room = m.free(snap, [r for r in snap.running if r.id not in gone])
    for p in d.placements:
        m.take(room, jobs[p.job_id].spec, p.assignments)
    flavors = {r.flavor for r in snap.running if r.id in gone}
    return any(m.fits(snap, room, b.spec, f, b.avoid_nodes) for f in flavors & set(b.spec.gang.flavors))


def check_reservations(snap: Snapshot, d: Decisions) -> None:
    jobs, _ = _index(snap)
    nodes = {n.name: n for n in snap.nodes}
    flavors = [r.flavor for r in d.reservations]
    assert len(set(flavors)) == len(flavors), "more than one reservation on a flavor"
    reserved = {r.job_id for r in d.reservations}
    for r in d.reservations:
        s = d.pending.get(r.job_id)
        assert s is not None and s.reason == PendingReason.RESERVED, f"{r.job_id} reserves but is {s}"
        assert r.flavor in jobs[r.job_id].spec.gang.flavors
        assert all(nodes[n].flavor == r.flavor for n in r.nodes), f"{r.job_id}: nodes of another flavor"
        want = r.start_at if r.start_at != float("inf") else None
        assert s.estimated_start == want, f"{r.job_id}: estimated_start {s.estimated_start}"
    for job, s in d.pending.items():
        if s.reason == PendingReason.RESERVED:
            assert job in reserved, f"{job} RESERVED without a reservation"
        if s.reason == PendingReason.RESERVED_FOR:
            assert s.blocked_by in reserved, f"{job} RESERVED_FOR {s.blocked_by}, which reserves nothing"
        if s.reason == PendingReason.CAPACITY and s.blocked_by is not None:
            # Room claimed by a preemption beneficiary: CAPACITY, blocked_by names it.
            holder = d.pending.get(s.blocked_by)
            assert holder is not None and holder.reason == PendingReason.PREEMPTING, f"{job} CAPACITY by {s}"


def check_nominal_guarantee(snap: Snapshot, d: Decisions, now: float) -> None:
    """An org below nominal whose first job fits within nominal, on the pool as it would be
    with every reclaimable borrower job gone, is placed or reclaims (or waits on a
    reservation held for an earlier gang, which the contract puts first).

    Checked for FAIR ordering with reclaim on and no strict order, single-flavor jobs.
    """
    p = snap.policy
    if p.ordering != Ordering.FAIR or not p.reclaim or p.strict_order:
        return
    _, run = _index(snap)
    held = {r.flavor for r in d.reservations}
    # The core also holds free room for PREEMPTING jobs (claims next to their victims).
    held |= {run[p.job_id].flavor for p in d.preemptions if p.beneficiary is not None}
    held |= {r.flavor for r in snap.running if r.terminating and r.preempted_for}
    for job in _first_jobs(snap, d, now):
        f = job.spec.gang.flavors[0]
        # Held capacity belongs to an earlier job; the contract does not say whether a
        # reclaim may count on it, so flavors with held room are not checked.
        if f in held or not _fits_after_reclaim(snap, d, job, f):
            continue
        placed = d.placed(job.id) is not None
        s = d.pending.get(job.id)
        ok = {PendingReason.PREEMPTING, PendingReason.RESERVED_FOR}
        assert placed or (s is not None and s.reason in ok), f"{job.id}: nominal job left {s}"


def _first_jobs(snap: Snapshot, d: Decisions, now: float) -> list[PendingJob]:
    rejected = {r.job_id for r in d.rejections}
    firsts: dict[str, PendingJob] = {}
    for j in sorted(snap.pending, key=lambda j: (-j.priority, not j.expedite, j.submitted_at, j.id)):
        if j.id in rejected or j.eligible_at > now:
            continue
        firsts.setdefault(j.spec.org, j)
    held = m.alloc(snap.running)
    out = []
    for j in firsts.values():
        if len(j.spec.gang.flavors) != 1:
            continue
        f = j.spec.gang.flavors[0]
        nominal = m.org_map(snap)[j.spec.org].quota(f).nominal
        if held[(j.spec.org, f)] + j.spec.gang.total_accelerators <= nominal:
            out.append(j)
    return out


def _fits_after_reclaim(snap: Snapshot, d: Decisions, job: PendingJob, f: str) -> bool:
    """``job`` fits on ``f`` with this cycle's placements, once every victim the reclaim
    rule allows (borrowers' live preemptible jobs, until each org is down to nominal,
    never the job's ``preempted_by``) has gone."""
    jobs, _ = _index(snap)
    held = m.alloc(snap.running)
    live = live_alloc(snap)
    orgs = m.org_map(snap)
    gone: set[str] = set()
    by_org: dict[str, list[RunningJob]] = defaultdict(list)
    stopping = set(d.preempted_ids())  # victims of this cycle stop for somebody else
    for r in snap.running:
        if r.id in stopping or r.terminating or not r.spec.preemptible:
            continue
        if r.flavor == f and r.id != job.preempted_by:
            by_org[r.spec.org].append(r)
    for name, rs in by_org.items():
        nominal = orgs[name].quota(f).nominal if name in orgs else 0
        for r in sorted(rs, key=m.victim_key):
            if live[(name, f)] <= nominal:
                break
            gone.add(r.id)
            live[(name, f)] -= r.accelerators
            held[(name, f)] -= r.accelerators
    room = m.free(snap, [r for r in snap.running if r.id not in gone])
    for p in d.placements:
        m.take(room, jobs[p.job_id].spec, p.assignments)
        held[(jobs[p.job_id].spec.org, p.flavor)] += jobs[p.job_id].spec.gang.total_accelerators
    q = job.spec.gang.total_accelerators
    return m.quota_verdict(snap, held, job.spec.org, f, q) == "ok" and m.fits(
        snap, room, job.spec, f, job.avoid_nodes
    )


def check_backfill(snap: Snapshot, d: Decisions, now: float) -> None:
    """A BACKFILL job ends by the start of the reservation on its flavor."""
    jobs, _ = _index(snap)
    starts = {r.flavor: r.start_at for r in d.reservations}
    for p in d.placements:
        if p.reason != PlaceReason.BACKFILL:
            continue
        limit = jobs[p.job_id].spec.max_runtime_seconds
        assert p.flavor in starts, f"{p.job_id}: BACKFILL on a flavor without a reservation"
        assert limit is not None and now + limit <= starts[p.flavor], f"{p.job_id} ends after the start"


def check_strict_order(snap: Snapshot, d: Decisions, now: float) -> None:
    """Strict order without backfill is plain FIFO: after the first job in the global order
    that waits (other than PREEMPTING, whose victims make room for it), nothing is placed.

    Checked for the FIFO and PRIORITY orderings (fixed order) when no job is nominated."""
    p = snap.policy
    if not p.strict_order or p.backfill or p.ordering == Ordering.FAIR:
        return
    if any(j.nominated for j in snap.pending) or any(r.terminating and r.preempted_for for r in snap.running):
        return
    rejected = {r.job_id for r in d.rejections}
    queue = [j for j in snap.pending if j.id not in rejected and j.eligible_at <= now]
    if p.ordering == Ordering.FIFO:
        queue.sort(key=lambda j: (j.submitted_at, j.id))
    else:
        queue.sort(key=lambda j: (-j.priority, j.submitted_at, j.id))
    blocked: str | None = None
    for j in queue:
        placed = d.placed(j.id) is not None
        assert not (placed and blocked), f"{j.id} placed behind the blocked {blocked} (strict order)"
        s = d.pending.get(j.id)
        if not placed and blocked is None and s is not None and s.reason != PendingReason.PREEMPTING:
            blocked = j.id
