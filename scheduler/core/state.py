"""The working state of one cycle: built from the snapshot (with the running set charged,
carried between cycles by ``carried.py``) and dropped at the end. The steps that act on
it are in ``decide.py`` (allocate), ``preempt.py`` (reclaim, preempt) and ``waiting.py``
(reserve, or say why a job waits).
"""

from __future__ import annotations

from dataclasses import dataclass

from quota.accounting import QuotaBook
from scheduler.core import carried
from scheduler.core.backfill import Hold
from scheduler.core.pool import ANYWHERE, Fit, Shape
from values.decisions import Decisions, PendingReason, PendingStatus, PreemptReason
from values.snapshot import PendingJob, RunningJob, Snapshot

Extra = dict[int, tuple[int, float, float]]


_SHAPES: dict[tuple[int, int, float, float], Shape] = {}


def shape_of(job: PendingJob, replicas: int | None = None) -> Shape:
    """The pending job's shape at ``replicas``, by default at its least: what it needs to
    start (an elastic gang's minimum)."""
    g = job.spec.gang
    key = (g.least if replicas is None else replicas, g.accelerators, g.cpu, g.memory_gb)
    shape = _SHAPES.get(key)
    if shape is None:  # a handful of distinct shapes: share them, hash them once
        shape = _SHAPES.setdefault(key, Shape(*key))
    return shape


# Kinds of job, numbered: dictionary keys built from them hash an int, not a tuple of
# names and shapes (asked for every pending job in every cycle). A handful per pool.
_KINDS: dict[tuple[object, ...], int] = {}


def kind_id(kind: tuple[object, ...]) -> int:
    got = _KINDS.get(kind)
    if got is None:
        got = _KINDS.setdefault(kind, len(_KINDS))
    return got


@dataclass(frozen=True, slots=True)
class JobFacts:
    """What the cycle derives from a pending job alone, kept while the object lives."""

    shape: Shape
    reject_kind: int  # (org, flavors, shape, required level): "can it ever run"
    # (org, flavors, shape, topology, priority): "does it fail like an earlier job", or
    # None for a job with avoided nodes or a preemption history (decided on its own).
    alike: int | None
    flavor: str | None  # its one flavor, or None where it names several
    limit: float | None  # its runtime limit

    @staticmethod
    def of(job: PendingJob) -> JobFacts:
        spec, shape, t = job.spec, shape_of(job), job.spec.topology
        level = t.level if t is not None and t.mode == "required" else None
        flavors = spec.gang.flavors
        plain = not (job.avoid_nodes or job.preempted_by)
        return JobFacts(
            shape,
            kind_id(("never", spec.org, flavors, shape, level)),
            kind_id(("outcome", spec.org, flavors, shape, t, job.priority)) if plain else None,
            flavors[0] if len(flavors) == 1 else None,
            spec.max_runtime_seconds,
        )


class CycleState:
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
        self.running_by_flavor = charged.running_by_flavor
        # Placed in this cycle: they release capacity at their runtime limit, like the rest.
        self.placed_by_flavor: dict[str, list[RunningJob]] = {f: [] for f in capacity}
        self.stopping = charged.stopping  # running jobs asked to stop (before or in this cycle)
        self.stopping_for = charged.stopping_for
        # What orgs hold through running jobs that are not stopping: whether an org still
        # borrows, for reclaim, is judged on this (not on this cycle's own placements).
        self.live = charged.live
        for (org, flavor), acc in sorted(charged.held.items()):
            self.book.add(org, flavor, acc)
        self.pool.build_buckets()
        # Per flavor and org: (victim class, ranked tails, running jobs by id).
        self._candidates: dict[
            str, dict[str, tuple[int, list[tuple[object, ...]], dict[str, RunningJob]]]
        ] = {}
        self.holds: dict[str, Hold] = {}
        # Capacity held for jobs whose victims are stopping, per flavor: (job, held).
        self.claims: dict[str, list[tuple[str, Extra]]] = {}
        self.promised: dict[tuple[str, str], int] = {}
        self.victims_of_claims: set[str] = set()
        self.blocked: dict[tuple[str, str], tuple[str, float | None]] = {}
        self.strict_blocker: str | None = None
        self._running_by_org: dict[str, dict[str, list[RunningJob]]] = {}
        self._strict_status: PendingStatus | None = None
        self.memo: dict[tuple[object, ...], object] = {}
        # Whether a kind of job can ever run depends on nodes, orgs and policy only: the
        # answers are carried between cycles with the charge (a fresh dict otherwise).
        self._rejects: dict[object, object] = charged.memo
        # Facts of one (immutable) job object, by id(); the last cycle's are reused.
        self._facts: dict[int, tuple[object, object]] = {}
        self._last_facts = charged.per_object
        self.ranked, self.running_jobs = charged.ranked, charged.jobs
        self.carried = charged
        self._outcomes: dict[object, tuple[int, PendingStatus]] = {}
        # Bumped when a hold or an org block changes the reasons later jobs get.
        self.epoch = 0

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

    def protected(self, r: RunningJob, reason: PreemptReason) -> bool:
        """Too young to stop for ``reason``: it has not run its min_runtime yet, and the
        policy does not let that kind of preemption override it."""
        return (
            r.min_runtime > 0
            and self.now - r.started_at < r.min_runtime
            and reason not in self.policy.min_runtime_yields_to
        )

    def ends_before(self, job: PendingJob, t: float) -> bool:
        limit = job.spec.max_runtime_seconds
        return limit is not None and self.now + limit <= t

    def pend(
        self,
        job: PendingJob,
        reason: PendingReason,
        message: str = "",
        estimated_start: float | None = None,
        blocked_by: str | None = None,
    ) -> None:
        self.out.pending[job.id] = PendingStatus(reason, message, estimated_start, blocked_by)
