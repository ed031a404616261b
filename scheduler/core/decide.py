"""``decide(snapshot, now) -> Decisions``: one scheduling cycle over an immutable snapshot.

The cycle runs small named steps in a fixed order (KAI/Volcano actions): move work off
unhealthy nodes, reject what can never run, then walk the queue in fair-share order and
for each job allocate, else reclaim or preempt, else reserve (EASY backfill), else record
why it waits. All state it mutates is a working copy built here and dropped at the end.
"""

from __future__ import annotations

import gc
import heapq
import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from quota.accounting import QuotaBook, Verdict
from scheduler.core import carried
from scheduler.core.backfill import Hold, plan_reservation
from scheduler.core.ordering import nominated_first
from scheduler.core.pool import ANYWHERE, Fit, Shape
from scheduler.core.victims import find_victims, victim_class, victim_tail
from scheduler.decisions import (
    Decisions,
    PendingReason,
    PendingStatus,
    Placement,
    PlaceReason,
    Preemption,
    PreemptReason,
    Rejection,
    RejectReason,
    Reservation,
)
from scheduler.snapshot import PendingJob, RunningJob, Snapshot

Extra = dict[int, tuple[int, float, float]]
_FAIL = None


def decide(snapshot: Snapshot, now: float) -> Decisions:
    # A cycle allocates hundreds of thousands of short-lived tuples and makes no reference
    # cycles; with a large snapshot alive, each collector pass would walk all of it, which
    # measured as a third of a steady cycle. So the collector waits until the cycle ends.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return Cycle(snapshot, now).run()
    finally:
        if enabled:
            gc.enable()


_SHAPES: dict[tuple[int, int, float, float], Shape] = {}


def shape_of(job: PendingJob | RunningJob) -> Shape:
    g = job.spec.gang
    key = (g.replicas, g.accelerators, g.cpu, g.memory_gb)
    shape = _SHAPES.get(key)
    if shape is None:  # a handful of distinct shapes: share them, hash them once
        shape = _SHAPES.setdefault(key, Shape(*key))
    return shape


@dataclass(frozen=True, slots=True)
class JobFacts:
    """What the cycle derives from a pending job alone, kept while the object lives."""

    shape: Shape
    reject_key: tuple[object, ...]  # its kind, for "can it ever run"
    kind: tuple[object, ...]  # its kind, for "does it fail like an earlier job"

    @staticmethod
    def of(job: PendingJob) -> JobFacts:
        spec, shape, t = job.spec, shape_of(job), job.spec.topology
        level = t.level if t is not None and t.mode == "required" else None
        return JobFacts(
            shape,
            (spec.org, spec.gang.flavors, shape, level),
            (spec.org, spec.gang.flavors, shape, t, job.priority),
        )


class Cycle:
    def __init__(self, snapshot: Snapshot, now: float) -> None:
        self.snap, self.now, self.policy = snapshot, now, snapshot.policy
        self.out = Decisions()
        # The running jobs charged onto the nodes and the quota: carried between cycles
        # and brought up to date with what started and ended (see carried.py).
        charged = carried.charged(snapshot)
        self.pool = charged.pool
        self.flavors = {f.name for f in snapshot.flavors}
        self.orgs = {o.name: o for o in snapshot.orgs}
        capacity = {f: self.pool.capacity.get(f, 0) for f in sorted(self.flavors)}
        self.book = QuotaBook(snapshot.orgs, capacity, borrowing=self.policy.borrowing)
        self.running_by_flavor: dict[str, list[RunningJob]] = {f: [] for f in capacity}
        # Placed in this cycle: they release capacity at their runtime limit, like the rest.
        self.placed_by_flavor: dict[str, list[RunningJob]] = {f: [] for f in capacity}
        self.stopping = charged.stopping  # running jobs asked to stop (before or in this cycle)
        self.stopping_for = charged.stopping_for
        # What orgs hold through running jobs that are not stopping: whether an org still
        # borrows, for reclaim, is judged on this (not on this cycle's own placements).
        self.live = charged.live
        by_flavor, orgs = self.running_by_flavor, self.orgs
        for r in snapshot.running:
            if r.flavor in by_flavor and r.spec.org in orgs:
                by_flavor[r.flavor].append(r)
        for (org, flavor), acc in sorted(charged.held.items()):
            self.book.add(org, flavor, acc)
        self.pool.build_buckets()
        self._candidates: dict[str, dict[str, list[tuple[tuple[object, ...], RunningJob]]]] = {}
        self.holds: dict[str, Hold] = {}
        # Capacity held for jobs whose victims are stopping, per flavor: (job, held).
        self.claims: dict[str, list[tuple[str, Extra]]] = {}
        self.promised: dict[tuple[str, str], int] = {}
        self.victims_of_claims: set[str] = set()
        self.blocked: dict[tuple[str, str], tuple[str, float | None]] = {}
        self.strict_blocker: str | None = None
        self._memo: dict[tuple[object, ...], object] = {}
        # Whether a kind of job can ever run depends on nodes, orgs and policy only: the
        # answers are carried between cycles with the charge (a fresh dict otherwise).
        self._rejects: dict[tuple[object, ...], object] = charged.memo
        # Facts of one (immutable) job object, by id(); the last cycle's are reused.
        self._facts: dict[int, tuple[object, object]] = {}
        self._last_facts = charged.per_object
        self._outcome_keys: dict[int, tuple[int, tuple[object, ...] | None]] = {}
        self._outcomes: dict[tuple[object, ...], tuple[int, PendingStatus]] = {}
        # Bumped when a hold or an org block changes the reasons later jobs get.
        self.epoch = 0

    # -- the steps ---------------------------------------------------------------------

    def run(self) -> Decisions:
        if self.policy.move_off_unhealthy:
            self.move_off_unhealthy()
        eligible = [j for j in sorted(self.snap.pending, key=lambda j: j.id) if self.admissible(j)]
        for job in nominated_first(eligible, self):
            self.consider(job)
        carried.keep(self._facts)
        return self.out

    def move_off_unhealthy(self) -> None:
        unhealthy = {name for name, sick in zip(self.pool.names, self.pool.unhealthy, strict=True) if sick}
        if not unhealthy:
            return
        for r in sorted(self.snap.running, key=lambda r: r.id):
            if r.terminating:
                continue
            bad = [n for n, _ in r.assignments if n in unhealthy]
            if bad:
                self.stopping.add(r.id)
                if (r.spec.org, r.flavor) in self.live:
                    self.live[(r.spec.org, r.flavor)] -= r.accelerators
                self.out.preemptions.append(
                    Preemption(r.id, PreemptReason.HEALTH, None, f"node {bad[0]} is unhealthy")
                )

    def admissible(self, job: PendingJob) -> bool:
        """Reject what can never run; park what may not run yet. True: goes to the queue."""
        key = self.facts(job).reject_key
        if key not in self._rejects:
            self._rejects[key] = self.never_runs(job)
        rejected = self._rejects[key]
        if rejected is not None:
            return self.reject(job, *rejected)  # type: ignore[misc]
        if job.eligible_at > self.now:
            self.pend(
                job,
                PendingReason.BACKOFF,
                f"restart backoff until t={job.eligible_at:g}",
                estimated_start=job.eligible_at,
            )
            return False
        return True

    def never_runs(self, job: PendingJob) -> tuple[RejectReason, str] | None:
        g, org = job.spec.gang, job.spec.org
        if org not in self.orgs:
            return RejectReason.UNKNOWN_ORG, f"org '{org}' does not exist"
        unknown = [f for f in g.flavors if f not in self.flavors]
        if unknown:
            return RejectReason.UNKNOWN_FLAVOR, f"flavor '{unknown[0]}' does not exist"
        shape, q = shape_of(job), g.total_accelerators
        if not any(self.fits_empty(job, f, shape) for f in g.flavors):
            return (
                RejectReason.NEVER_FITS,
                f"{g.replicas} x {g.accelerators} {'/'.join(g.flavors)} does not fit even an empty pool",
            )
        if all(q > self.quota_max(org, f) for f in g.flavors):
            limits = ", ".join(f"{self.quota_max(org, f):g} {f}" for f in g.flavors)
            return RejectReason.NO_QUOTA, f"needs {q} accelerators; org '{org}' may hold at most {limits}"
        return None

    def consider(self, job: PendingJob) -> None:
        if self.strict_blocker is not None:
            self.pend(
                job,
                PendingReason.BLOCKED,
                "strict order: waits behind an earlier job",
                blocked_by=self.strict_blocker,
            )
            return
        # On a saturated pool most jobs fail exactly like the last job of the same kind.
        # Inside a cycle, free capacity, lendable quota and victims only shrink, so a job
        # that failed stays failed; only a new hold or org block can change *why*. So a
        # failure is reused for same-kind jobs until then (the epoch), instead of redone.
        if self.known_failure(job):
            return
        key = self.outcome_key(job)
        epoch = self.epoch
        self.allocate_or_wait(job)
        status = self.out.pending.get(job.id)
        if (
            key is not None
            and self.epoch == epoch
            and status is not None
            and status.reason is not PendingReason.PREEMPTING
        ):
            self._outcomes[key] = (epoch, status)

    def known_failure(self, job: PendingJob) -> bool:
        """Record ``job``'s status if a job of the same kind already failed in this epoch.

        Such a job changes nothing, so the order may also settle it early (see ordering)."""
        if self.strict_blocker is not None:
            return False
        key = self.outcome_key(job)
        hit = None if key is None else self._outcomes.get(key)
        if hit is None or hit[0] != self.epoch:
            return False
        self.out.pending[job.id] = hit[1]
        return True

    def outcome_key(self, job: PendingJob) -> tuple[object, ...] | None:
        # Asked twice per job (by the order, then by consider); the answer changes only
        # with the epoch, so it is kept per job until then.
        hit = self._outcome_keys.get(id(job))
        if hit is not None and hit[0] == self.epoch:
            return hit[1]
        key = self._outcome_key(job)
        self._outcome_keys[id(job)] = (self.epoch, key)
        return key

    def _outcome_key(self, job: PendingJob) -> tuple[object, ...] | None:
        if job.avoid_nodes or job.preempted_by or job.id in self.stopping_for:
            return None  # job-specific constraints: decide it on its own
        spec = job.spec
        # The runtime limit matters only through "ends before the hold starts" and "ends
        # before the org's blocked job could start": key on those answers, not the value.
        timing = tuple(
            (f in self.holds and self.ends_before(job, self.holds[f].start_at), self.blocked_in_org(job, f))
            for f in spec.gang.flavors
        )
        return (*self.facts(job).kind, timing)

    def allocate_or_wait(self, job: PendingJob) -> None:
        g, org, shape = job.spec.gang, job.spec.org, self.facts(job).shape
        q = g.total_accelerators
        verdicts = [(f, self.book.check(org, f, q)) for f in g.flavors]
        capacity_fail: str | None = None
        blocked_by: str | None = None
        for want in (Verdict.NOMINAL, Verdict.BORROWED):
            for f, verdict in verdicts:
                if verdict is not want:
                    continue
                if want is Verdict.BORROWED:
                    blocker = self.blocked_in_org(job, f)
                    if blocker is not None:
                        blocked_by = blocked_by or blocker
                        continue
                if self.try_place(job, f, shape, verdict):
                    return
                capacity_fail = capacity_fail or f
        for f, verdict in verdicts:
            # The shared pool is used up because the nodes are full, not because lending
            # limits bind: the job waits for nodes, and may reserve them like any gang.
            if verdict is Verdict.LENDING and self.pool.free_total(f) < q:
                capacity_fail = capacity_fail or f
        if job.id in self.stopping_for:
            self.reclaim_claim(job, shape)
            self.pend(job, PendingReason.PREEMPTING, "waiting for preempted jobs to stop")
            return
        if self.try_preempt(job, shape, verdicts):
            return
        if self.policy.strict_order:
            self.strict_blocker = job.id
        if capacity_fail is not None:
            self.wait_for_capacity(job, capacity_fail, shape)
        elif blocked_by is not None:
            self.pend(
                job, PendingReason.BLOCKED, "waits behind an earlier job of its org", blocked_by=blocked_by
            )
        else:
            lending = any(v is Verdict.LENDING for _, v in verdicts)
            self.block_org(job, verdicts)
            if lending:
                self.pend(
                    job, PendingReason.LENDING, f"other orgs lend no more idle {'/'.join(g.flavors)} quota"
                )
            else:
                self.pend(
                    job,
                    PendingReason.QUOTA,
                    f"org '{org}' is at nominal + borrowing limit for {'/'.join(g.flavors)}",
                )

    # -- allocate ----------------------------------------------------------------------

    def facts(self, job: PendingJob) -> JobFacts:
        hit = self._facts.get(id(job)) or self._last_facts.get(id(job))
        if hit is not None and hit[0] is job:
            got: JobFacts = hit[1]  # type: ignore[assignment]
        else:
            got = JobFacts.of(job)
        self._facts[id(job)] = (job, got)
        return got

    def fit_of(self, job: PendingJob) -> Fit:
        t = job.spec.topology
        if t is None or t.mode != "required":
            return Fit(avoid=job.avoid_nodes) if job.avoid_nodes else ANYWHERE
        return Fit(t.level, True, job.avoid_nodes)

    def try_place(self, job: PendingJob, f: str, shape: Shape, verdict: Verdict) -> bool:
        fit = self.fit_of(job)
        key = ("place", f, shape, fit)
        nodes = None if key in self._memo else self.pool.place(f, shape, fit)
        hold = self.holds.get(f)
        backfill = False
        if nodes is None:
            self._memo[key] = _FAIL
            if hold is not None and self.ends_before(job, hold.start_at):
                nodes = self.pool.place(f, shape, fit, extra=hold.held)
                backfill = nodes is not None
            if nodes is None:
                return False
        assignments = self.commit(job, f, shape, nodes, hold if backfill else None)
        if backfill:
            reason = PlaceReason.BACKFILL
        else:
            reason = PlaceReason.NOMINAL if verdict is Verdict.NOMINAL else PlaceReason.BORROWED
        self.out.placements.append(
            Placement(
                job.id,
                f,
                assignments,
                reason,
                self.borrowed(job.spec.org, f),
            )
        )
        return True

    def commit(
        self, job: PendingJob, f: str, s: Shape, nodes: list[tuple[int, int]], hold: Hold | None
    ) -> tuple[tuple[str, int], ...]:
        for i, n in nodes:
            a, c, m = n * s.acc, n * s.cpu, n * s.mem
            if hold is not None and i in hold.held:
                # A backfilled job may run on held capacity: it ends before the gang starts.
                ha, hc, hm = hold.held[i]
                ua, uc, um = (
                    max(0, a - max(0, self.pool.free_acc[i])),
                    max(0.0, c - max(0.0, self.pool.free_cpu[i])),
                    max(0.0, m - max(0.0, self.pool.free_mem[i])),
                )
                ua, uc, um = min(ua, ha), min(uc, hc), min(um, hm)
                hold.held[i] = (ha - ua, hc - uc, hm - um)
                a, c, m = a - ua, c - uc, m - um
            self.pool.take(i, a, c, m)
        self.book.add(job.spec.org, f, s.replicas * s.acc)
        assignments = tuple((self.pool.names[i], n) for i, n in nodes)
        self.placed_by_flavor[f].append(
            RunningJob(job.id, job.spec, job.priority, job.submitted_at, self.now, f, assignments)
        )
        return assignments

    def ends_before(self, job: PendingJob, t: float) -> bool:
        limit = job.spec.max_runtime_seconds
        return limit is not None and self.now + limit <= t

    # -- reclaim and preempt -----------------------------------------------------------

    def try_preempt(self, job: PendingJob, shape: Shape, verdicts: list[tuple[str, Verdict]]) -> bool:
        org, q = job.spec.org, shape.replicas * shape.acc
        for f, verdict in verdicts:
            reclaim = (
                self.policy.reclaim
                and verdict in (Verdict.NOMINAL, Verdict.LENDING)
                and self.book.alloc(org, f) + q <= self.book.nominal(org, f)
            )
            priority = self.policy.priority_preemption
            if not (reclaim or priority):
                continue
            key = ("victims", org, f, shape, job.priority, reclaim, job.spec.topology, job.avoid_nodes)
            if key in self._memo:
                continue
            found = find_victims(
                self.pool,
                self.book,
                job,
                f,
                shape,
                self.candidates(job, f, reclaim, priority),
                self.stopping,
                fit=self.fit_of(job),
                live=self.live,
            )
            if found is None:
                self._memo[key] = _FAIL
                continue
            victims, placement, released = found
            self.claim(job, f, shape, placement, released, [v.job for v in victims])
            for v in victims:
                self.stopping.add(v.job.id)
                self.live[(v.job.spec.org, f)] -= v.job.accelerators
                self.out.preemptions.append(
                    Preemption(v.job.id, v.reason, job.id, f"makes room for {job.id} ({v.reason.value})")
                )
            self.pend(job, PendingReason.PREEMPTING, f"{len(victims)} job(s) asked to stop to make room")
            return True
        return False

    def claim(
        self,
        job: PendingJob,
        f: str,
        shape: Shape,
        placement: list[tuple[int, int]],
        released: Extra,
        victims: list[RunningJob],
    ) -> None:
        """Treat the beneficiary's claim as granted for the rest of the cycle: hold what is
        free now on its future nodes, and book quota as it will be once the victims are
        gone (it charged, they credited), so no later job spends what it was promised."""
        self.claims.setdefault(f, []).append((job.id, self.pool.hold(placement, shape, released)))
        self.victims_of_claims.update(v.id for v in victims)
        self.promise(job.spec.org, f, shape.replicas * shape.acc)
        for v in victims:
            self.promise(v.spec.org, f, -v.accelerators)

    def reclaim_claim(self, job: PendingJob, shape: Shape) -> None:
        """Renew, in this cycle, the claim of a job whose victims are still stopping."""
        victims = sorted(
            (r for r in self.snap.running if r.preempted_for == job.id and r.terminating), key=lambda r: r.id
        )
        f = victims[0].flavor if victims else None
        if f is None or f not in job.spec.gang.flavors or f not in self.book.capacity:
            return
        released = self.pool.release_of([v for v in victims if v.flavor == f])
        placement = self.pool.place(f, shape, self.fit_of(job), extra=released)
        if placement is not None:
            # Nodes only: the quota the victims hold is still theirs in this snapshot, and
            # the order already puts this job first.
            self.claims.setdefault(f, []).append((job.id, self.pool.hold(placement, shape, released)))
            self.victims_of_claims.update(v.id for v in victims)

    def candidates(
        self, job: PendingJob, f: str, reclaim: bool, priority: bool
    ) -> Iterator[tuple[tuple[object, ...], RunningJob]]:
        """Possible victims on ``f`` in victim order, lazily merged from per-org lists."""
        if f not in self._candidates:
            # Victim order is (borrowing?, then the job's own facts): the first part is the
            # same for all of an org's jobs, the rest is kept per job object across cycles.
            facts, last = self._facts, self._last_facts
            by_org: dict[str, list[tuple[tuple[object, ...], RunningJob]]] = {}
            for r in self.running_by_flavor.get(f, []):
                if r.spec.preemptible and not r.terminating:
                    hit = last.get(id(r))
                    tail = hit[1] if hit is not None and hit[0] is r else victim_tail(r)
                    facts[id(r)] = (r, tail)
                    by_org.setdefault(r.spec.org, []).append((tail, r))  # type: ignore[arg-type]
            for org, lst in by_org.items():
                first = (victim_class(self.book, org, f),)
                lst[:] = [(first + t, r) for t, r in lst]
                lst.sort(key=lambda e: e[0])
            self._candidates[f] = by_org
        by_org = self._candidates[f]
        org = job.spec.org
        streams: list[Iterable[tuple[tuple[object, ...], RunningJob]]] = []
        if priority and org in by_org:
            # An org's own list is ordered by priority: the lower-priority ones lead it.
            streams.append(itertools.takewhile(lambda e: e[1].priority < job.priority, by_org[org]))
        if reclaim:
            streams += [
                lst
                for o, lst in by_org.items()
                if o != org and self.live.get((o, f), 0) > self.book.nominal(o, f)
            ]
        return heapq.merge(*streams, key=lambda e: e[0])

    # -- wait: reserve, or say why -----------------------------------------------------

    def wait_for_capacity(self, job: PendingJob, f: str, shape: Shape) -> None:
        reason, blocker = self.capacity_reason(job, f, shape)
        if (
            reason in (PendingReason.CAPACITY, PendingReason.TOPOLOGY)
            and blocker is None  # room claimed by a preemption beneficiary is not reservable
            and self.policy.backfill
            and f not in self.holds
            and ("no-hold", f, shape, self.fit_of(job)) not in self._memo
        ):
            fit = self.fit_of(job)
            hold = plan_reservation(
                self.pool,
                job.id,
                f,
                shape,
                [
                    r
                    for r in self.running_by_flavor.get(f, []) + self.placed_by_flavor.get(f, [])
                    if r.id not in self.victims_of_claims  # their room is promised already
                ],
                self.stopping,
                self.now,
                lambda extra: self.pool.place(f, shape, fit, extra=extra),
            )
            if hold is None:
                self._memo[("no-hold", f, shape, fit)] = _FAIL  # it would not fit even then
            else:
                self.epoch += 1
                self.holds[f] = hold
                start = None if math.isinf(hold.start_at) else hold.start_at
                self.out.reservations.append(
                    Reservation(job.id, f, tuple(self.pool.names[i] for i in hold.nodes), hold.start_at)
                )
                self.pend(
                    job,
                    PendingReason.RESERVED,
                    f"holds {len(hold.nodes)} {f} node(s) for its start",
                    estimated_start=start,
                )
                return
        g = job.spec.gang
        messages = {
            PendingReason.TOPOLOGY: f"no single {job.spec.topology.level if job.spec.topology else 'rack'} "
            f"has room for {g.replicas} x {g.accelerators} {f}",
            PendingReason.RESERVED_FOR: f"room on {f} is held for {blocker}",
            PendingReason.HEALTH: f"room on {f} exists only on unhealthy, degraded or cordoned nodes",
            PendingReason.CAPACITY: f"no set of {f} nodes has room for {g.replicas} x {g.accelerators}",
        }
        est = self.holds[f].start_at if reason is PendingReason.RESERVED_FOR and f in self.holds else None
        self.pend(
            job,
            reason,
            messages[reason],
            blocked_by=blocker,
            estimated_start=None if est is None or math.isinf(est) else est,
        )

    def capacity_reason(self, job: PendingJob, f: str, shape: Shape) -> tuple[PendingReason, str | None]:
        fit = self.fit_of(job)
        hold = self.holds.get(f)
        claims = self.claims.get(f, [])
        key = ("why", f, shape, fit, hold.job_id if hold else None, len(claims))
        if key in self._memo:
            return self._memo[key]  # type: ignore[return-value]
        avoid = job.avoid_nodes
        held = self.held_on(f) if claims else {}
        result: tuple[PendingReason, str | None] = (PendingReason.CAPACITY, None)
        if fit.required and self.pool.place(f, shape, Fit(avoid=avoid)) is not None:
            result = (PendingReason.TOPOLOGY, None)
        elif hold is not None and self.pool.place(f, shape, fit, extra=hold.held) is not None:
            result = (PendingReason.RESERVED_FOR, hold.job_id)
        elif claims and self.pool.place(f, shape, fit, extra=held) is not None:
            # Room a preemption beneficiary claims until its victims are gone: no
            # reservation of its own (that is the head gang's), so this is plain capacity.
            result = (PendingReason.CAPACITY, claims[0][0])
        elif self.pool.place(f, shape, fit, ignore_health=True) is not None:
            result = (PendingReason.HEALTH, None)
        self._memo[key] = result
        return result

    def promise(self, org: str, f: str, q: int) -> None:
        """Book quota as it will be once victims are gone (not what orgs hold now)."""
        self.book.add(org, f, q)
        self.promised[(org, f)] = self.promised.get((org, f), 0) + q

    def borrowed(self, org: str, f: str) -> int:
        """Accelerators above nominal that the org really holds, promises aside."""
        held = self.book.alloc(org, f) - self.promised.get((org, f), 0)
        return max(0, held - self.book.nominal(org, f))

    def held_on(self, f: str) -> Extra:
        """Everything held on ``f``: the reservation and the preemption beneficiaries."""
        hold = self.holds.get(f)
        parts = ([hold.held] if hold else []) + [c for _, c in self.claims.get(f, [])]
        if len(parts) <= 1:
            return parts[0] if parts else {}
        total: Extra = {}
        for part in parts:
            for i, (a, c, m) in part.items():
                ta, tc, tm = total.get(i, (0, 0.0, 0.0))
                total[i] = (ta + a, tc + c, tm + m)
        return total

    def blocked_in_org(self, job: PendingJob, f: str) -> str | None:
        got = self.blocked.get((job.spec.org, f))
        if got is None:
            return None
        blocker, start = got
        return None if start is not None and self.ends_before(job, start) else blocker

    def block_org(self, job: PendingJob, verdicts: list[tuple[str, Verdict]]) -> None:
        """A job waiting on quota keeps its org's later borrowing jobs from overtaking it."""
        for f, _ in verdicts:
            if (job.spec.org, f) not in self.blocked:
                self.epoch += 1
                self.blocked[(job.spec.org, f)] = (job.id, self.quota_free_at(job, f))

    def quota_free_at(self, job: PendingJob, f: str) -> float | None:
        org, q = job.spec.org, job.spec.gang.total_accelerators
        excess = self.book.alloc(org, f) + q - self.book.ceiling(org, f)
        ends = sorted(
            (r.expected_end if r.id not in self.stopping else self.now, r.accelerators)
            for r in self.running_by_flavor.get(f, [])
            if r.spec.org == org and r.expected_end is not None
        )
        for end, acc in ends:
            excess -= acc
            if excess <= 0:
                return max(end, self.now)
        return None

    # -- helpers -----------------------------------------------------------------------

    def fits_empty(self, job: PendingJob, f: str, shape: Shape) -> bool:
        t = job.spec.topology
        level = t.level if t is not None and t.mode == "required" else None
        key = ("empty", f, shape, level)
        got = self._memo.get(key)
        if got is None:
            fit = Fit(level, True) if level else ANYWHERE  # avoided nodes still count here
            got = self._memo[key] = self.pool.place(f, shape, fit, empty=True) is not None
        return bool(got)

    def quota_max(self, org: str, f: str) -> float:
        row = self.book.row(org, f)
        return min(row.ceiling, row.private + self.book.shared_cap[f])

    def reject(self, job: PendingJob, reason: RejectReason, message: str) -> bool:
        self.out.rejections.append(Rejection(job.id, reason, message))
        return False

    def pend(
        self,
        job: PendingJob,
        reason: PendingReason,
        message: str = "",
        estimated_start: float | None = None,
        blocked_by: str | None = None,
    ) -> None:
        self.out.pending[job.id] = PendingStatus(reason, message, estimated_start, blocked_by)
