"""``decide(snapshot, now) -> Decisions``: one scheduling cycle over an immutable snapshot.

The cycle runs the policy's named actions in its order (``scheduler/core/actions``, as
KAI-Scheduler and Volcano do; by default evacuate, allocate, preempt, reserve): each may
work before the queue walk, then the walk offers every pending job that may run, in the
queue order (``ordering``), to the actions in turn until one settles it; a job none
settles is told why it waits. All state it mutates is a working copy built here and
dropped at the end.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    # The garbage collector is left alone: it is the whole process's (the API's threads
    # share it). What a cycle allocates is short-lived tuples without reference cycles;
    # the process that runs the loop tunes the collector for that (``collector.tune``).
    return Cycle(snapshot, now).run()


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
        for job, alike in nominated_first(eligible, self.queue_inputs()):
            if alike is not None:  # fails as an earlier job of its kind did, the order found
                pending[job.id] = alike
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
                "restart backoff after a failure: eligible again at its estimated start",
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
        shape, q = shape_of(job), g.least_accelerators
        if not any(self.fits_empty(job, f, shape) for f in g.flavors):
            least = f"at least {g.least}" if g.elastic else f"{g.replicas}"
            return (
                RejectReason.NEVER_FITS,
                f"{least} x {g.accelerators} {'/'.join(g.flavors)} does not fit even an empty pool",
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
        key = self._outcome_key(job)
        epoch = self.epoch
        if key is not None:
            hit = self._outcomes.get(key)
            if hit is not None and hit[0] == epoch:
                self.out.pending[job.id] = hit[1]
                return
        self.walk(job)
        status = self.out.pending.get(job.id)
        if (
            key is not None
            and self.epoch == epoch
            and status is not None
            and status.reason is not PendingReason.PREEMPTING
        ):
            self._outcomes[key] = (epoch, status)

    def failed_alike(self, queue: Sequence[PendingJob], start: int) -> list[PendingStatus]:
        """The statuses of ``queue[start:]``, in order, for as long as each job would fail
        as a job of its kind already did in this epoch: such a job changes nothing (the
        queue order passes these without a round each)."""
        found: list[PendingStatus] = []
        if self.strict_blocker is not None:
            return found
        outcomes, epoch, key_of = self._outcomes, self.epoch, self._outcome_key
        for i in range(start, len(queue)):
            key = key_of(queue[i])
            hit = None if key is None else outcomes.get(key)
            if hit is None or hit[0] != epoch:
                break
            found.append(hit[1])
        return found

    def _outcome_key(self, job: PendingJob) -> object:
        """What ``job``'s failure depends on besides its kind, or None: decide it alone.
        (Asked for nearly every pending job in every cycle: kept lean.)"""
        facts: JobFacts = self._facts[id(job)][1]  # type: ignore[assignment]  # admissible() put it there
        kind = facts.alike
        if kind is None or job.id in self.stopping_for:
            return None  # job-specific constraints: decide it on its own
        # The runtime limit matters only through "ends before the hold starts" and "ends
        # before the org's blocked job could start": key on those answers, not the value.
        holds, blocked = self.holds, self.blocked
        if not holds and not blocked:
            return kind  # nothing to end before: the same for every job of the kind
        f = facts.flavor
        if f is None:
            return (
                kind,
                tuple(
                    (f in holds and self.ends_before(job, holds[f].start_at), self.blocked_in_org(job, f))
                    for f in job.spec.gang.flavors
                ),
            )
        # One flavor (nearly every job): the same answers, inlined.
        limit, now = facts.limit, self.now
        hold = holds.get(f)
        ends = hold is not None and limit is not None and now + limit <= hold.start_at
        got = blocked.get((job.spec.org, f)) if blocked else None
        if got is None:
            return (kind, ends, None)
        blocker, start = got
        passes = start is not None and limit is not None and now + limit <= start
        return (kind, ends, None if passes else blocker)

    def walk(self, job: PendingJob) -> None:
        """Offer ``job`` to the actions in turn until one settles it; else it waits."""
        g, shape = job.spec.gang, self.facts(job).shape
        q = g.least_accelerators
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
