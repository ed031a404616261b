"""``decide(snapshot, now) -> Decisions``: one scheduling cycle over an immutable snapshot.

The cycle runs small named steps in a fixed order (KAI/Volcano actions): move work off
unhealthy nodes, reject what can never run, then walk the queue in fair-share order and
for each job allocate, else reclaim or preempt, else reserve (EASY backfill), else record
why it waits. All state it mutates is a working copy built here and dropped at the end.
"""

from __future__ import annotations

import gc
from operator import attrgetter

from quota.accounting import Verdict
from scheduler.core import carried
from scheduler.core.backfill import Hold
from scheduler.core.ordering import nominated_first
from scheduler.core.pool import ANYWHERE, Fit, Shape
from scheduler.core.preempt import PreemptSteps
from scheduler.core.state import JobFacts, shape_of
from scheduler.core.waiting import WaitSteps
from values.decisions import (
    Decisions,
    PendingReason,
    PendingStatus,
    Placement,
    PlaceReason,
    Preemption,
    PreemptReason,
    Rejection,
    RejectReason,
)
from values.snapshot import PendingJob, RunningJob, Snapshot

Extra = dict[int, tuple[int, float, float]]
_by_id = attrgetter("id")
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


class Cycle(PreemptSteps, WaitSteps):
    """One cycle's working state and its steps (reclaim and preemption in preempt.py,
    reservations and waiting reasons in waiting.py)."""

    # -- the steps ---------------------------------------------------------------------

    def run(self) -> Decisions:
        if self.policy.move_off_unhealthy:
            self.move_off_unhealthy()
        eligible = [j for j in sorted(self.snap.pending, key=_by_id) if self.admissible(j)]
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
        key = self.facts(job).reject_kind
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
            # Every job behind the blocker gets the same (immutable) status: made once.
            status = self._strict_status
            if status is None or status.blocked_by != self.strict_blocker:
                status = self._strict_status = PendingStatus(
                    PendingReason.BLOCKED,
                    "strict order: waits behind an earlier job",
                    None,
                    self.strict_blocker,
                )
            self.out.pending[job.id] = status
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

    def settle(self, queue: list[PendingJob], pos: int) -> int:
        """``known_failure`` for ``queue[pos]``, ``queue[pos + 1]``, ... until one is not
        settled; returns its position. The order's hot loop: nothing here changes the
        epoch, so it is read once."""
        if self.strict_blocker is not None:
            return pos
        outcomes, keys, epoch, pending = self._outcomes, self._outcome_keys, self.epoch, self.out.pending
        n = len(queue)
        while pos < n:
            job = queue[pos]
            hit = keys.get(id(job))
            if hit is not None and hit[0] == epoch:
                key = hit[1]
            else:
                key = self._outcome_key(job)
                keys[id(job)] = (epoch, key)
            got = None if key is None else outcomes.get(key)
            if got is None or got[0] != epoch:
                return pos
            pending[job.id] = got[1]
            pos += 1
        return pos

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
        hit = self._facts.get(id(job))
        facts: JobFacts = hit[1] if hit is not None and hit[0] is job else self.facts(job)  # type: ignore[assignment]
        if not facts.plain or job.id in self.stopping_for:
            return None  # job-specific constraints: decide it on its own
        # The runtime limit matters only through "ends before the hold starts" and "ends
        # before the org's blocked job could start": key on those answers, not the value.
        holds, blocked = self.holds, self.blocked
        if not holds and not blocked:
            return (facts.kind, None)  # nothing to end before: the same for every job
        flavors = job.spec.gang.flavors
        if len(flavors) > 1:
            timing = tuple(
                (f in holds and self.ends_before(job, holds[f].start_at), self.blocked_in_org(job, f))
                for f in flavors
            )
            return (facts.kind, timing)
        # One flavor (nearly every job): the same answers, inlined on the hot path.
        f, limit = flavors[0], job.spec.max_runtime_seconds
        hold = holds.get(f)
        ends = hold is not None and limit is not None and self.now + limit <= hold.start_at
        got = blocked.get((job.spec.org, f)) if blocked else None
        if got is None:
            blocker = None
        else:
            blocker, start = got
            if start is not None and limit is not None and self.now + limit <= start:
                blocker = None
        return (facts.kind, ((ends, blocker),))

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

    def borrowed(self, org: str, f: str) -> int:
        """Accelerators above nominal that the org really holds, promises aside."""
        held = self.book.alloc(org, f) - self.promised.get((org, f), 0)
        return max(0, held - self.book.nominal(org, f))

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
