"""When will each pending job start: the pool replayed forward in virtual time with the
same ``decide`` the loop runs.

From the snapshot on, running jobs end at their runtime limits (a stopping job when its
grace period ends), or earlier where the org's finished jobs show that its limits are
overestimates (``Runtimes``); pending jobs wait in the order the core gives them; nobody
new arrives. Each step gathers the releases and backoff ends of the next stretch of
virtual time, decides at the last of them, and applies the decisions as the loop would:
placements start, victims stop after their grace period and queue again, and the job they
stopped for is nominated. A job's estimate is the time of the step that placed it.

The cost is bounded (``Budget``): at most ``steps`` decide calls and ``horizon_s`` of
virtual time. Steps are spaced so that that many reach the horizon: one loop interval
apart near now, then a fixed fraction of how far ahead they are, so a smaller budget
coarsens the estimates instead of shortening the view. Where releases are sparse a step
jumps straight to the next one.

What an estimate assumes: runtimes as above, no arrivals. A job submitted later can still
go first (a less served org, a shorter job of the same org), and jobs end before their
limits; so with limits an estimate is the latest start these assumptions allow, up to one
step's resolution. Jobs without a limit never end in the replay: what waits for them
gets no estimate, and says so.
"""

from __future__ import annotations

import bisect
import functools
import heapq
import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from quota.fairshare import accumulate
from scheduler.core import carried
from scheduler.core.decide import decide as core_decide
from values.decisions import Decisions, PendingReason, PendingStatus, Preemption
from values.domain import JobSpec
from values.snapshot import PendingJob, RunningJob, Snapshot

Decide = Callable[[Snapshot, float], Decisions]


class Basis(StrEnum):
    """What an estimate rests on, in the words the message uses."""

    RESERVATION = "reservation"  # the core's own hold for the head gang of its flavor
    REPLAY = "replay"  # the forward replay placed it
    BACKOFF = "backoff"  # it starts when its restart backoff ends
    QUOTA_RELEASE = "quota release"  # its org's running jobs (or the lenders') release quota first


@dataclass(frozen=True, slots=True)
class Estimate:
    start: float | None  # None: unknown, and ``why`` says why
    basis: Basis | None = None
    why: str = ""
    # The start with runtimes at the range percentile (``forecast``'s ``high``), where
    # runtimes are learned; None where there is no range.
    high: float | None = None
    # For an unknown start the budget cut short: the replay saw no start before this.
    not_before: float | None = None


@dataclass(frozen=True, slots=True)
class Forecast:
    estimates: dict[str, Estimate]
    steps: int  # decide calls made, every replay together (the first one's counted once)
    reached: float  # the virtual time the main replay got to
    runtimes: str  # what the main replay assumed about runtimes, in words
    high: float | None = None  # the range replay's runtime percentile; None: no range


@dataclass(frozen=True, slots=True)
class Budget:
    steps: int = 64  # decide calls per replay, the first one included
    horizon_s: float = 30 * 86_400.0  # how far ahead the replay looks
    resolution_s: float = 60.0  # the finest spacing of steps: one loop interval

    def growth(self) -> float:
        """The fraction by which steps are spaced: a step from ``lead`` seconds ahead of
        now is ``max(resolution_s, growth * (lead + resolution_s))`` long, and the
        smallest growth is taken with which ``steps`` decide calls reach the horizon."""
        return _growth(self.resolution_s, self.horizon_s, max(1, self.steps - 1))

    def step(self, lead: float, growth: float) -> float:
        return max(self.resolution_s, growth * (lead + self.resolution_s))


@functools.lru_cache(maxsize=64)
def _growth(r: float, h: float, n: int) -> float:
    if h / r <= n:
        return 0.0

    def reaches(g: float) -> bool:  # n steps from now get to the horizon
        lead = 0.0
        for _ in range(n):
            lead += max(r, g * (lead + r))
            if lead >= h:
                return True
        return False

    lo, hi = 0.0, h / r
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if reaches(mid) else (mid, hi)
    return hi


@dataclass(frozen=True)
class Runtimes:
    """How long the replay lets a job run. Without ratios for its org: its runtime limit.
    With them: the ``percentile`` of the org's runtime/limit ratios, among the finished
    jobs that ran longer than this one has so far (a job past most of its peers is likely
    a long one; past all of them, it runs to its limit). One distribution per org: ratios
    kept apart by the size of the limit (per power of two) measured worse on the tuning
    trace (scheduler/sim/README.md)."""

    ratios: Mapping[str, Sequence[float]] = field(default_factory=dict)  # per org, sorted, in (0, 1]
    percentile: float = 50.0

    @property
    def learned(self) -> bool:
        return any(self.ratios.values())

    def at(self, percentile: float) -> Runtimes:
        return replace(self, percentile=percentile)

    def fraction(self, org: str, ran: float) -> float:
        """The fraction of its limit a job of ``org`` that has run ``ran`` of it will run."""
        got = self.ratios.get(org)
        if not got:
            return 1.0
        i = bisect.bisect_right(got, ran)
        n = len(got) - i
        if n <= 0:
            return 1.0
        k = min(n - 1, max(0, math.ceil(self.percentile / 100.0 * n) - 1))  # nearest rank
        return got[i + k]

    def end(self, spec: JobSpec, started_at: float, now: float) -> float | None:
        """When a job of ``spec`` that started at ``started_at`` ends, as seen at ``now``."""
        limit = spec.max_runtime_seconds
        if limit is None:
            return None
        ran = max(0.0, now - started_at) / limit
        return max(started_at + self.fraction(spec.org, ran) * limit, now)

    def words(self) -> str:
        if not self.learned:
            return "with runtime limits (at the latest)"
        return f"at the p{self.percentile:g} of its org's runtime/limit"


def learn(
    samples: Iterable[tuple[str, float, float]], min_samples: int = 10, percentile: float = 50.0
) -> Runtimes:
    """Runtimes from finished jobs' (org, runtime, limit) in seconds: an org with fewer
    than ``min_samples`` is left out (its jobs run to their limits). A ratio above 1 (a job
    past its limit) counts as 1."""
    per: dict[str, list[float]] = {}
    for org, ran, limit in samples:
        if limit > 0 and ran >= 0:
            per.setdefault(org, []).append(min(1.0, max(ran / limit, 1e-9)))
    return Runtimes(
        {o: tuple(sorted(r)) for o, r in sorted(per.items()) if len(r) >= min_samples}, percentile
    )


@dataclass
class Lateness:
    """How late jobs started against the estimates they were given, learned from the
    pool's own history, to give the range an end that holds. The replay assumes nobody
    arrives; a job overtaken by a later one (a less served org, a shorter job) starts
    later than told, and the runtime range alone does not cover that. Each started job
    that had an estimate adds one ratio, (actual lead + ``pad_s``) / (estimated lead +
    ``pad_s``), where the lead is from when the estimate was made; ``pad_s`` keeps a
    short estimated wait from making a huge ratio of a few minutes' lateness. The range's
    end becomes at least made_at + (estimated lead + pad) x the ``percentile`` of the
    latest ``window`` ratios - pad, once ``min_samples`` are in. Clock-free: every call
    takes its times."""

    percentile: float = 90.0
    pad_s: float = 600.0
    window: int = 1000
    min_samples: int = 50
    _ratios: list[float] = field(default_factory=list, repr=False)
    _sorted: list[float] | None = field(default=None, repr=False)

    def started(self, made_at: float, estimated: float, actual: float) -> None:
        """A job told at ``made_at`` that it would start at ``estimated`` started at ``actual``."""
        lead = max(0.0, estimated - made_at)
        self._ratios.append((max(0.0, actual - made_at) + self.pad_s) / (lead + self.pad_s))
        if len(self._ratios) > self.window:
            del self._ratios[: len(self._ratios) - self.window]
        self._sorted = None

    @property
    def samples(self) -> int:
        return len(self._ratios)

    def factor(self) -> float | None:
        """The ``percentile`` ratio, or None before ``min_samples``."""
        if len(self._ratios) < self.min_samples:
            return None
        if self._sorted is None:
            self._sorted = sorted(self._ratios)
        got = self._sorted
        return got[min(len(got) - 1, max(0, math.ceil(self.percentile / 100.0 * len(got)) - 1))]

    def stretch(self, e: Estimate, made_at: float) -> Estimate:
        """``e`` with its range's end at least as late as past lateness says."""
        q = self.factor()
        if e.start is None or q is None:
            return e
        late = made_at + (max(0.0, e.start - made_at) + self.pad_s) * q - self.pad_s
        high = max(late, e.start, e.high if e.high is not None else e.start)
        return replace(e, high=high) if high != e.high else e


def forecast(
    snapshot: Snapshot,
    now: float,
    *,
    budget: Budget = Budget(),
    runtimes: Runtimes = Runtimes(),
    high: float | None = 90.0,
    first: Decisions | None = None,
    wanted: Collection[str] | None = None,
    decide: Decide = core_decide,
    to_horizon: bool = False,
) -> Forecast:
    """An estimate for every job still pending after ``decide(snapshot, now)`` (``first``
    where the caller has it already), or for those of them in ``wanted``. Where runtimes
    are learned, a second replay with them at the ``high`` percentile gives the range."""
    with carried.apart():
        if first is None:
            first = decide(snapshot, now)
        targets = [j for j in first.pending if wanted is None or j in wanted]
        growth = budget.growth()
        main = _Replay(snapshot, now, runtimes, decide)
        main.run(first, set(targets), budget, growth, to_horizon)
        upper = None
        if high is not None and runtimes.learned:
            upper = _Replay(snapshot, now, runtimes.at(high), decide)
            upper.run(first, set(targets), budget, growth)
    estimates = {j: _estimate(j, first.pending[j], main, upper, runtimes) for j in targets}
    steps = main.steps + (upper.steps - 1 if upper is not None else 0)
    return Forecast(estimates, steps, main.t, runtimes.words(), high if upper is not None else None)


def _estimate(
    job_id: str, status: PendingStatus, main: _Replay, upper: _Replay | None, runtimes: Runtimes
) -> Estimate:
    start = main.start_of(job_id, status)
    if start is None:
        return Estimate(None, why=main.why_not(job_id), not_before=main.t if main.cut else None)
    reason = status.reason
    basis = Basis.REPLAY
    if reason is PendingReason.RESERVED:
        basis = Basis.RESERVATION
    elif reason is PendingReason.BACKOFF and start == status.estimated_start:
        basis = Basis.BACKOFF
    elif reason in (PendingReason.QUOTA, PendingReason.LENDING):
        basis = Basis.QUOTA_RELEASE
    hi = None if upper is None else upper.start_of(job_id, status)
    if hi is not None:
        hi = max(hi, start)
    return Estimate(start, basis, runtimes.words(), hi)


# A job that waited for these did not wait for nodes: when it could start is not told by
# the release of the nodes it got.
_NOT_FOR_NODES = frozenset(
    {PendingReason.QUOTA, PendingReason.LENDING, PendingReason.BLOCKED, PendingReason.BACKOFF}
)


class _Replay:
    """The pool's state in virtual time: what runs (and when it ends), what waits."""

    def __init__(self, snap: Snapshot, now: float, runtimes: Runtimes, decide: Decide) -> None:
        self.snap, self.now, self.t, self.runtimes, self.decide = snap, now, now, runtimes, decide
        self.running: dict[str, RunningJob] = {r.id: r for r in snap.running}
        self.pending: dict[str, PendingJob] = {j.id: j for j in snap.pending}
        self.ends: list[tuple[float, str]] = []  # a heap; an entry is stale unless ``end_at`` agrees
        self.end_at: dict[str, float] = {}
        self.backoffs = [(j.eligible_at, j.id) for j in snap.pending if j.eligible_at > now]
        heapq.heapify(self.backoffs)
        self.alloc: dict[tuple[str, str], int] = {}
        self.usage = {o: dict(u) for o, u in snap.usage.items()}
        self.started: dict[str, tuple[float, float]] = {}  # job -> (step time, first event of its step)
        self.last: dict[str, PendingStatus] = {}
        self.steps = 0
        self.cut: str | None = None  # "steps" or "horizon" where the budget ended it
        self._window_start = now  # the first event of the step being decided
        self._freed: dict[str, float] = {}  # node -> its last release in this step
        self._resizes: dict[str, Preemption] = {}  # elastic gangs stopping to resize
        self._decayed_to = now
        for r in snap.running:
            self._charge(r, 1)
            if r.terminating:
                self._ends(r.id, now + r.spec.grace_period_seconds)
            else:
                self._ends(r.id, runtimes.end(r.spec, r.started_at, now))

    def run(
        self, first: Decisions, targets: set[str], budget: Budget, growth: float, to_horizon: bool = False
    ) -> None:
        """Until every target started, or (``to_horizon``: for what-if) until the budget
        or the horizon ends it or nothing is left to happen."""
        self.steps = 1
        self._apply(first, self.now, targets)
        self.last = first.pending
        horizon = self.now + budget.horizon_s
        while targets or to_horizon:
            if self.steps >= budget.steps:
                self.cut = "steps"
                return
            nxt = self._next_event()
            if nxt is None:
                return  # nothing left with a known end: the rest waits for jobs without limits
            if nxt > horizon:
                self.cut = "horizon"
                return
            until = max(nxt, self.t + budget.step(self.t - self.now, growth))
            t = self._release(until)
            self._window_start = nxt
            self._decay(t)
            snap = replace(
                self.snap,
                running=tuple(self.running.values()),
                pending=tuple(self.pending.values()),
                usage={o: dict(u) for o, u in self.usage.items()},
            )
            decisions = self.decide(snap, t)
            self.steps += 1
            self._apply(decisions, t, targets)
            self.last = decisions.pending

    # -- what happened to a job ---------------------------------------------------------

    def start_of(self, job_id: str, status: PendingStatus) -> float | None:
        got = self.started.get(job_id)
        if got is None:
            return None
        t, window_start = got
        est = status.estimated_start
        if est is not None and math.isfinite(est):
            # The core's own time is exact where the replay's step is coarser: a reserved
            # gang at limits starts when its last release comes, a backoff when it ends.
            if status.reason is PendingReason.RESERVED and not self.runtimes.learned:
                return min(t, est)
            if status.reason is PendingReason.BACKOFF and window_start <= est <= t:
                return est
        return t

    def why_not(self, job_id: str) -> str:
        if self.cut == "steps":
            return f"it starts beyond the forecast's {self.steps} steps"
        if self.cut == "horizon":
            return "it starts beyond the forecast's horizon, if at all"
        status = self.last.get(job_id)
        if status is not None and status.reason is PendingReason.HEALTH:
            return "room exists only on unhealthy, degraded or cordoned nodes"
        if any(r.spec.max_runtime_seconds is None and not r.terminating for r in self.running.values()):
            return "it waits for jobs without a runtime limit"
        return "nothing it waits for has a known end"

    # -- the state in virtual time ------------------------------------------------------

    def _ends(self, job_id: str, end: float | None) -> None:
        if end is None:
            self.end_at.pop(job_id, None)
            return
        self.end_at[job_id] = end
        heapq.heappush(self.ends, (end, job_id))

    def _next_event(self) -> float | None:
        ends, end_at = self.ends, self.end_at
        while ends and end_at.get(ends[0][1]) != ends[0][0]:
            heapq.heappop(ends)
        got = [ends[0][0]] if ends else []
        if self.backoffs:
            got.append(self.backoffs[0][0])
        return min(got) if got else None

    def _release(self, until: float) -> float:
        """Every release and backoff end up to ``until``; the time of the last of them."""
        self._freed = {}
        last = self.t
        ends, end_at = self.ends, self.end_at
        while ends and ends[0][0] <= until:
            end, job_id = heapq.heappop(ends)
            if end_at.get(job_id) != end:
                continue
            del end_at[job_id]
            last = max(last, end)
            self._finish(self.running.pop(job_id), end)
        while self.backoffs and self.backoffs[0][0] <= until:
            last = max(last, heapq.heappop(self.backoffs)[0])
        self.t = last
        return last

    def _finish(self, r: RunningJob, at: float) -> None:
        self._charge(r, -1)
        freed = self._freed
        for node, _ in r.assignments:
            freed[node] = max(freed.get(node, at), at)
        if not r.terminating:
            return
        # A victim (or a job moved off a failing node) queues again; the job it was
        # stopped for goes first from now on, as the loop nominates it.
        held = max(0.0, at - r.started_at) * r.accelerators
        resize = self._resizes.pop(r.id, None)  # requeued as the loop requeues a resize
        self.pending[r.id] = PendingJob(
            id=r.id,
            spec=r.spec,
            priority=r.priority,
            submitted_at=r.submitted_at,
            attempt=1,
            preempted_by=r.preempted_for,
            service=r.service + held,
            nominated=resize is not None,
            expedite=resize is not None,
            prefer_nodes=() if resize is None else resize.kept_nodes,
            resize_to=None if resize is None else resize.resize_to,
        )
        ben = self.pending.get(r.preempted_for) if r.preempted_for else None
        if ben is not None and not ben.nominated:
            self.pending[ben.id] = replace(ben, nominated=True)

    def _started_at(self, job_id: str, assignments: tuple[tuple[str, int], ...], t: float) -> float:
        """When a job placed by the step decided at ``t`` would have started: a step
        gathers several releases, and one that waited for nodes could start once the
        nodes it got were free (the latest of their releases in the step). One that
        waited for quota, or got no node freed in the step, starts at ``t``: what let it
        in is not known, and ``t`` is the latest it can be."""
        before = self.last.get(job_id)
        if t == self.now or before is None or before.reason in _NOT_FOR_NODES:
            return t
        freed = [self._freed[n] for n, _ in assignments if n in self._freed]
        return max(self._window_start, max(freed)) if freed else t

    def _apply(self, d: Decisions, t: float, targets: set[str]) -> None:
        runtimes = self.runtimes
        for p in d.placements:
            job = self.pending.pop(p.job_id)
            spec = job.spec
            start = self._started_at(job.id, p.assignments, t)
            r = RunningJob(
                id=job.id,
                spec=spec,
                priority=job.priority,
                submitted_at=job.submitted_at,
                started_at=start,
                flavor=p.flavor,
                assignments=p.assignments,
                service=job.service,
                min_runtime=spec.min_runtime_seconds or 0.0,
            )
            self.running[r.id] = r
            self._charge(r, 1)
            # From its own start: a job that started earlier in the step may have ended
            # before the step's time already (it ends at the next step, in the past).
            self._ends(r.id, runtimes.end(spec, start, start))
            if job.id in targets:
                targets.discard(job.id)
                self.started[job.id] = (start, self._window_start)
        for v in d.preemptions:
            victim = self.running.get(v.job_id)
            if victim is None or victim.terminating:
                continue
            self.running[victim.id] = replace(victim, terminating=True, preempted_for=v.beneficiary)
            self._ends(victim.id, t + victim.spec.grace_period_seconds)
            if v.resize:
                self._resizes[victim.id] = v
        for rej in d.rejections:
            self.pending.pop(rej.job_id, None)
            targets.discard(rej.job_id)

    def _charge(self, r: RunningJob, sign: int) -> None:
        key = (r.spec.org, r.flavor)
        self.alloc[key] = self.alloc.get(key, 0) + sign * r.accelerators

    def _decay(self, t: float) -> None:
        """Usage up to ``t`` at what ran since the last step (releases inside a step are
        counted to its end: a step is short beside the half-life)."""
        dt = t - self._decayed_to
        if dt <= 0:
            return
        self._decayed_to = t
        h = self.snap.policy.half_life_seconds
        for (org, flavor), acc in self.alloc.items():
            per = self.usage.setdefault(org, {})
            per[flavor] = accumulate(per.get(flavor, 0.0), dt, acc, h)
        for org, per in self.usage.items():
            for flavor, u in per.items():
                if (org, flavor) not in self.alloc:
                    per[flavor] = accumulate(u, dt, 0, h)


def describe(e: Estimate, high: float | None = None) -> str:
    """The words a pending job's message gains from its estimate (``high``: the range
    replay's runtime percentile)."""
    if e.start is None:
        return f"start unknown: {e.why}"
    words = {
        Basis.RESERVATION: "its reservation",
        Basis.REPLAY: "a forward replay of the pool",
        Basis.BACKOFF: "the end of its restart backoff",
        Basis.QUOTA_RELEASE: "the quota its org's jobs release, in a forward replay",
    }
    text = f"estimated start from {words[e.basis or Basis.REPLAY]}"
    if e.basis is not Basis.BACKOFF:
        text += f", {e.why}"
    if e.high is not None and e.high - e.start >= 60.0:
        text += f"; {span(e.high - e.start)} later at the p{high or 90:g}"
    return text


def span(seconds: float) -> str:
    """``2h 10m``, ``3d 4h``, ``45m``: a lead or lag in words."""
    minutes = int(seconds // 60)
    days, hours, mins = minutes // 1440, minutes // 60 % 24, minutes % 60
    if days:
        return f"{days}d {hours}h"
    return f"{hours}h {mins}m" if hours else f"{mins}m"
