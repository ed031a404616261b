"""``decide(snapshot, now) -> Decisions``: one scheduling cycle over an immutable snapshot.

The cycle runs the policy's named actions in its order (``scheduler/core/actions``, as
KAI-Scheduler and Volcano do; by default evacuate, allocate, preempt, reserve): each may
work before the queue walk, then the walk offers every pending job that may run, in the
queue order (``ordering``), to the actions in turn until one settles it; a job none
settles is told why it waits. All state it mutates is a working copy built here and
dropped at the end.
"""

from __future__ import annotations

import gc
from operator import attrgetter

from quota.accounting import Verdict
from scheduler.core import actions, carried
from scheduler.core.actions import Ask, Outcome
from scheduler.core.ordering import QueueInputs, nominated_first
from scheduler.core.pool import ANYWHERE, Fit, Shape
from scheduler.core.preempt import PreemptSteps
from scheduler.core.state import JobFacts, shape_of
from scheduler.core.waiting import WaitSteps
from values.decisions import (
    Decisions,
    PendingReason,
    PendingStatus,
    Rejection,
    RejectReason,
)
from values.snapshot import PendingJob, Snapshot

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
        self.actions = actions.resolve(self.policy.actions)
        self.walk_actions = [a for a in self.actions if actions.walks(a)]
        for action in self.actions:
            action.before(self)
        eligible = [j for j in sorted(self.snap.pending, key=_by_id) if self.admissible(j)]
        pending = self.out.pending
        for job in nominated_first(eligible, self.queue_inputs()):
            # Most jobs of a saturated pool come right after the order asked failed_alike
            # about them (and it said they fail as an earlier one did): record that here.
            last = self._last_alike
            if last[0] is job and last[2] is not None and last[1] == self.epoch:
                pending[job.id] = last[2]
            else:
                self.consider(job)
        for action in self.actions:
            action.after(self)
        carried.keep(self._facts)
        return self.out

    def queue_inputs(self) -> QueueInputs:
        return QueueInputs(
            self.policy.ordering,
            self.policy.within_org,
            self.now,
            self.book,
            self.snap.usage,
            {name: org.weight for name, org in self.orgs.items()},
            self.policy.half_life_seconds,
            self.stopping_for,
            self.failed_alike,
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
        if all(q > self.book.most_holdable(org, f) for f in g.flavors):
            limits = ", ".join(f"{self.book.most_holdable(org, f):g} {f}" for f in g.flavors)
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
        self.walk(job)
        status = self.out.pending.get(job.id)
        if (
            key is not None
            and self.epoch == epoch
            and status is not None
            and status.reason is not PendingReason.PREEMPTING
        ):
            self._outcomes[key] = (epoch, status)

    def known_failure(self, job: PendingJob) -> bool:
        """Record ``job``'s status if a job of the same kind already failed in this epoch."""
        status = self.failed_alike(job)
        if status is None:
            return False
        self.out.pending[job.id] = status
        return True

    def failed_alike(self, job: PendingJob) -> PendingStatus | None:
        """The status of a job of ``job``'s kind that failed in this epoch, if one did:
        ``job`` would fail the same way and change nothing (the queue order uses this to
        pass such jobs without a round each)."""
        if self.strict_blocker is not None:
            return None
        last = self._last_alike
        if last[0] is job and last[1] == self.epoch:
            return last[2]  # asked by the order, then by consider: the same answer
        key = self.outcome_key(job)
        hit = None if key is None else self._outcomes.get(key)
        status = None if hit is None or hit[0] != self.epoch else hit[1]
        self._last_alike = (job, self.epoch, status)
        return status

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

    def walk(self, job: PendingJob) -> None:
        """Offer ``job`` to the actions in turn until one settles it; else it waits."""
        g, shape = job.spec.gang, self.facts(job).shape
        q = g.total_accelerators
        ask = Ask(job, shape, [(f, self.book.check(job.spec.org, f, q)) for f in g.flavors])
        outcome = None
        for action in self.walk_actions:
            outcome = action.attempt(self, ask)
            if action.frees_capacity:
                self.forget_failures()
            if outcome is not None:
                break
        if outcome is Outcome.PLACED or outcome is Outcome.PREEMPTING:
            return
        if self.policy.strict_order:
            self.strict_blocker = job.id
        if outcome is None:
            self.wait(ask)

    def wait(self, ask: Ask) -> None:
        job, verdicts = ask.job, ask.verdicts
        if ask.capacity_fail is not None:
            self.explain_capacity(job, ask.capacity_fail, ask.shape)
        elif ask.blocked_by is not None:
            self.pend(
                job,
                PendingReason.BLOCKED,
                "waits behind an earlier job of its org",
                blocked_by=ask.blocked_by,
            )
        else:
            flavors = "/".join(job.spec.gang.flavors)
            self.block_org(job, verdicts)
            if any(v is Verdict.LENDING for _, v in verdicts):
                self.pend(job, PendingReason.LENDING, f"other orgs lend no more idle {flavors} quota")
            else:
                self.pend(
                    job,
                    PendingReason.QUOTA,
                    f"org '{job.spec.org}' is at nominal + borrowing limit for {flavors}",
                )

    def forget_failures(self) -> None:
        """Room appeared mid-walk: what failed before may fit now."""
        self.epoch += 1
        self.memo.clear()
        self._outcomes.clear()

    # -- helpers -----------------------------------------------------------------------

    def fits_empty(self, job: PendingJob, f: str, shape: Shape) -> bool:
        t = job.spec.topology
        level = t.level if t is not None and t.mode == "required" else None
        key = ("empty", f, shape, level)
        got = self.memo.get(key)
        if got is None:
            fit = Fit(level, True) if level else ANYWHERE  # avoided nodes still count here
            got = self.memo[key] = self.pool.place(f, shape, fit, empty=True) is not None
        return bool(got)

    def reject(self, job: PendingJob, reason: RejectReason, message: str) -> bool:
        self.out.rejections.append(Rejection(job.id, reason, message))
        return False
