"""The event loop in virtual time: arrivals, completions, preemption exits, node failures
and scheduling cycles. Each cycle builds a ``Snapshot``, calls the same ``decide`` as the
service, and applies its decisions the way the service's applier would.

Cycles run on events, at most one per ``interval`` (a rate-limited, event-driven loop
like the service's): an event at ``t`` asks for a cycle at ``max(t, last cycle +
interval)``. Between events nothing a cycle could act on changes, so idle stretches
cost nothing.
"""

from __future__ import annotations

import heapq
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from quota.fairshare import accumulate
from scheduler.applier import apply_decisions, nominated
from scheduler.sim.estimates import EstimateConfig, Estimator
from scheduler.sim.failures import FailureModel, FailureStream
from scheduler.sim.policies.base import SimPolicy
from scheduler.sim.pool import SimPool, elastic, job_spec
from scheduler.sim.record import JobRecord, SimResult, Timeline
from scheduler.sim.trace import TraceJob
from values.decisions import Decisions, Placement, Preemption, PreemptReason, Rejection
from values.domain import Health, JobSpec
from values.restarts import FailureCategory, Return, returning
from values.snapshot import PendingJob, RunningJob, Snapshot

Decide = Callable[[Snapshot, float], Decisions]
Observer = Callable[[Snapshot, float, Decisions], None]
Progress = Callable[[float, int, int], None]

# Simultaneous events: capacity is released before arrivals, the cycle comes last.
FINISH, EXIT, HANG, UNHANG, FAIL, ARRIVE, WAKE, CYCLE, SLOW, STRAGGLE = range(10)
STRAGGLER_RECHECK_S = 60.0  # a slowed gang short of break-even is judged again this much later


@dataclass(frozen=True)
class SimConfig:
    interval_s: float = 60.0
    grace_s: float = 30.0  # preempted jobs hold their nodes this long (SIGTERM, then kill)
    runtime_estimate: float = 1.0  # max_runtime_seconds = estimate x run time + restart overhead
    seed: int = 0
    estimates: EstimateConfig | None = None  # start estimates to record (None: none)
    # The share of multi-replica trace jobs made elastic (``pool.elastic``), and the
    # policy's grow_after_seconds for them (None: the policy's own).
    elastic: float = 0.0
    grow_after_s: float | None = None


class SimJob:
    """One trace job's mutable state in the replay."""

    __slots__ = (
        "acc",
        "attained",
        "attempt",
        "avoid",
        "ckpt_at",
        "finish_at",
        "hung_at",
        "in_a_row",
        "next_ckpt",
        "org_idx",
        "pending",
        "rate",
        "rec",
        "remaining",
        "resize",
        "running",
        "saved",
        "size_acc",
        "slow_at",
        "slow_done",
        "slow_node",
        "spec",
        "start",
        "work_start",
    )

    def __init__(self, rec: JobRecord, spec: JobSpec, org_idx: int) -> None:
        self.rec = rec
        self.spec = spec
        self.org_idx = org_idx
        self.acc = rec.accelerators
        self.remaining = rec.duration
        self.attempt = 0
        self.start = 0.0
        self.work_start = 0.0
        self.saved = 0.0  # progress kept when a preemption was decided
        self.ckpt_at: float | None = None
        self.hung_at: float | None = None  # the running attempt's gang stopped stepping then
        # Stragglers: when a node of the running attempt turned slow, which, and the
        # progress made by then (after it, progress runs straggler_slowdown times slower);
        # when it now finishes (an earlier FINISH is stale).
        self.slow_at: float | None = None
        self.slow_node: str | None = None
        self.slow_done = 0.0
        self.finish_at: float | None = None
        # Hang and straggler restarts since the last attempt that saved a checkpoint: what
        # their limits count (values.restarts.IN_A_ROW), as the service does.
        self.in_a_row: dict[FailureCategory, int] = {}
        self.next_ckpt = math.inf  # when the running attempt's next checkpoint is due
        self.attained = 0.0  # accelerator-seconds held over finished attempts
        self.pending: PendingJob | None = None
        self.running: RunningJob | None = None
        self.avoid: frozenset[str] = frozenset()  # the node that failed its latest attempt
        # Running: accelerators held, and progress per second (an elastic gang at k of
        # its n replicas progresses at k/n: linear scaling, the documented model).
        self.size_acc = rec.accelerators
        self.rate = 1.0
        self.resize: Preemption | None = None  # the resize it is stopping for

    @property
    def id(self) -> str:
        return self.spec.name


class Simulation:
    def __init__(
        self,
        pool: SimPool,
        trace: Sequence[TraceJob],
        policy: SimPolicy,
        failures: FailureModel,
        config: SimConfig = SimConfig(),
        decide: Decide | None = None,
        observer: Observer | None = None,
        progress: Progress | None = None,
    ) -> None:
        if decide is None:
            from scheduler.core import decide as core_decide

            decide = core_decide
        self.pool, self.policy, self.model, self.config = pool, policy, failures, config
        self._decide, self._observer, self._progress = decide, observer, progress
        core = policy.core
        if config.grow_after_s is not None:
            core = replace(core, grow_after_seconds=config.grow_after_s)
        self._core = core
        self._small: set[str] = set()  # running elastic gangs below their most: they may grow
        self.org_names = tuple(o.name for o in pool.orgs)
        self._org_idx = {o: i for i, o in enumerate(self.org_names)}
        self.nominal = [pool.nominal(o) for o in self.org_names]
        self.jobs: dict[str, SimJob] = {}
        self._events: list[tuple[float, int, int, str]] = []
        self._seq = 0
        self._live = 0  # queued events other than failures: none left means nothing can move
        for tj in trace:
            self._add_job(tj)
        self.pending: dict[str, SimJob] = {}
        self.running: dict[str, SimJob] = {}
        self._on_node: dict[str, set[str]] = {n.name: set() for n in pool.nodes}
        self._node_names = [n.name for n in pool.nodes]
        self._any_unhealthy = any(n.health == Health.UNHEALTHY for n in pool.nodes)
        self._unusable = {n.name for n in pool.nodes if n.health == Health.UNHEALTHY or n.cordoned}
        self.alloc = [0] * len(self.org_names)
        self._pending_acc = [0] * len(self.org_names)
        self._pending_sizes: list[Counter[int]] = [Counter() for _ in self.org_names]
        self._usage = [0.0] * len(self.org_names)
        self._half_life = policy.core.half_life_seconds
        self.now = 0.0
        self._last_cycle = -math.inf
        self._cycle_at: float | None = None
        self._wake_at: float | None = None
        self._finished = 0
        self.cycles = 0
        self.node_failures = 0
        self.preemptions: Counter[str] = Counter()
        self.resizes: Counter[str] = Counter()  # elastic gangs restarted at another size
        self.timeline = Timeline(orgs=self.org_names)
        self._failures = FailureStream(failures, len(pool.nodes), config.seed)
        # Running attempts by when their next checkpoint is due: a cycle touches only
        # the jobs that checkpointed since the last one, not every running job.
        self._ckpt_due: list[tuple[float, str, int]] = []
        self.estimator = Estimator(config.estimates, decide) if config.estimates is not None else None

    # -- setup -------------------------------------------------------------------------

    def _add_job(self, tj: TraceJob) -> None:
        overhead = self.model.restart_overhead_s
        limit = min(max(tj.duration, 1.0) * self.config.runtime_estimate + overhead, 365 * 86_400.0)
        spec = job_spec(tj, self.pool, limit)
        if self.config.elastic > 0:
            spec = elastic(spec, tj.id, self.config.elastic, self.config.seed)
        if spec.name in self.jobs:
            raise ValueError(f"job id '{tj.id}' appears twice in the trace")
        rec = JobRecord(
            id=spec.name,
            org=spec.org,
            submit=tj.submit,
            duration=tj.duration,
            accelerators=tj.gpus,
            nodes=spec.gang.replicas,
        )
        self.jobs[spec.name] = SimJob(rec, spec, self._org_idx[spec.org])
        self._push(tj.submit, ARRIVE, spec.name)

    def _push(self, t: float, kind: int, ref: str) -> None:
        self._seq += 1
        if kind != FAIL:
            self._live += 1
        heapq.heappush(self._events, (t, kind, self._seq, ref))

    # -- the loop ----------------------------------------------------------------------

    def run(self) -> SimResult:
        started = time.perf_counter()
        total = len(self.jobs)
        self._schedule_failure(0.0)
        handled = 0
        while self._live and self._finished < total:
            t, kind, _, ref = heapq.heappop(self._events)
            if kind != FAIL:
                self._live -= 1
            self._advance(t)
            self._handle(kind, ref)
            handled += 1
            if self._progress is not None and handled % 2000 == 0:
                self._progress(t, self._finished, total)
        self.timeline.end = self.now
        return SimResult(
            policy=self.policy.name,
            jobs=[j.rec for j in self.jobs.values()],
            timeline=self.timeline,
            capacity=self.pool.capacity,
            nominal=dict(zip(self.org_names, self.nominal, strict=True)),
            weights={o.name: o.weight for o in self.pool.orgs},
            preemptions=dict(self.preemptions),
            resizes=dict(self.resizes),
            node_failures=self.node_failures,
            cycles=self.cycles,
            wall_s=time.perf_counter() - started,
            unfinished=total - self._finished,
            forecasts=None if self.estimator is None else vars(self.estimator.stats),
        )

    def _handle(self, kind: int, ref: str) -> None:
        if kind == CYCLE:
            self._cycle_at = None
            self._cycle()
        elif kind == WAKE:
            self._wake_at = None
            self._want_cycle()
        elif kind == ARRIVE:
            self._enqueue(self.jobs[ref], preempted_by=None)
            self._want_cycle()
        elif kind == FAIL:
            self._node_failed(ref)
        else:
            job_id, attempt = ref.rsplit("#", 1)
            job = self.jobs[job_id]
            if job.running is None or job.attempt != int(attempt):
                return  # stale: the attempt already ended another way
            if kind == FINISH:
                if job.hung_at is not None:
                    return  # hung before its end: it never gets there
                if job.finish_at is not None and self.now < job.finish_at:
                    return  # slowed since: a later FINISH stands
                self._complete(job)
            elif kind == HANG:
                job.hung_at = self.now
                self._push(self.now + self.model.hang_lasts_s, UNHANG, ref)
                return
            elif kind == UNHANG:
                self._unhang(job)
            elif kind == SLOW:
                self._slow_down(job)
                return
            elif kind == STRAGGLE:
                if not self._straggler_moved(job):
                    return
            else:
                beneficiary, resize = job.running.preempted_for, job.resize
                job.resize = None
                self._interrupt(job, job.saved, failure=False, preempted_by=beneficiary, resize=resize)
                self._nominate(beneficiary)
            self._want_cycle()
        self._record()

    def _advance(self, t: float) -> None:
        """Decay usage to ``t``: alloc is constant since the last event."""
        dt = t - self.now
        if dt > 0:
            h = self._half_life
            self._usage = [accumulate(u, dt, a, h) for u, a in zip(self._usage, self.alloc, strict=True)]
            self.now = t

    def _want_cycle(self) -> None:
        if self._cycle_at is None:
            self._cycle_at = max(self.now, self._last_cycle + self.config.interval_s)
            self._push(self._cycle_at, CYCLE, "")

    def _schedule_failure(self, t: float) -> None:
        nxt = self._failures.next_after(t)
        if nxt is not None:
            self._push(nxt[0], FAIL, self._node_names[nxt[1]])

    # -- a scheduling cycle --------------------------------------------------------------

    def snapshot(self, now: float) -> Snapshot:
        self._refresh_checkpoints(now)
        if self.policy.dynamic_priority:
            self._refresh_priorities(now)
        flavor = self.pool.flavor
        return Snapshot(
            flavors=self.pool.flavors,
            nodes=self.pool.nodes,
            orgs=self.pool.orgs,
            running=tuple([j.running for j in self.running.values() if j.running is not None]),
            pending=tuple([j.pending for j in self.pending.values() if j.pending is not None]),
            usage={o: {flavor: u} for o, u in zip(self.org_names, self._usage, strict=True)},
            policy=self._core,
        )

    def _cycle(self) -> None:
        now = self.now
        if not self.pending and not self._any_unhealthy and not self._small:
            return  # decide() has nothing to do: no job waits, nobody must move or may grow
        self._last_cycle = now
        self.cycles += 1
        snap = self.snapshot(now)
        decisions = self._decide(snap, now)
        if self._observer is not None:
            self._observer(snap, now, decisions)
        self.apply(decisions)
        if self.estimator is not None:
            self.estimator.after_cycle(snap, now, decisions, self.jobs)
        wake = self.policy.next_wakeup(self, now)
        if wake is not None and wake > now and (self._wake_at is None or wake < self._wake_at):
            self._wake_at = wake
            self._push(wake, WAKE, "")

    def apply(self, decisions: Decisions) -> None:
        apply_decisions(decisions, _Effects(self))

    def preempt(self, p: Preemption) -> bool:
        job = self.running.get(p.job_id)
        if job is None or job.running is None or job.running.terminating:
            return False
        job.saved = self._checkpointed(job, self.now)
        job.running = replace(job.running, terminating=True, preempted_for=p.beneficiary)
        self.preemptions[p.reason.value] += 1
        job.rec.preemptions += 1
        if p.reason in (PreemptReason.HEALTH, PreemptReason.GROW):
            job.rec.preemptions -= 1  # a move or a grow, not a preemption for someone else
        if p.resize:
            job.resize = p
            self.resizes["grow" if p.reason is PreemptReason.GROW else "shrink"] += 1
        self._push(self.now + self.config.grace_s, EXIT, f"{job.id}#{job.attempt}")
        return True

    def reject(self, rejection: Rejection) -> bool:
        job = self.pending.get(rejection.job_id)
        if job is None:
            return False
        self._dequeue(job)
        job.rec.rejected = rejection.reason.value
        self._finished += 1
        return True

    # -- job transitions -------------------------------------------------------------------

    def _nominate(self, job_id: str | None) -> None:
        """A victim has exited: the job it stopped for goes first next cycle (as the
        service's loop does), so the room it freed is not taken by somebody else."""
        ben = self.jobs.get(job_id) if job_id else None
        if ben is not None and ben.pending is not None:
            ben.pending = nominated(ben.pending)

    def _enqueue(
        self,
        job: SimJob,
        preempted_by: str | None,
        back: Return | None = None,
        resize: Preemption | None = None,
    ) -> None:
        """Into the queue: as ``back`` says after a failure not its own; after a resize
        (as the service requeues one) first, at its new size, its kept ranks first."""
        rec = job.rec
        if back is not None:
            job.avoid = back.avoid
        if resize is not None:
            back = Return(expedite=True, prefer=resize.kept_nodes, avoid=job.avoid)
        job.pending = PendingJob(
            id=job.id,
            spec=job.spec,
            priority=self.policy.priority(job, self.now),
            submitted_at=rec.submit,
            attempt=job.attempt,
            avoid_nodes=job.avoid,
            preempted_by=preempted_by,
            service=job.attained,
            expedite=back is not None and back.expedite,
            prefer_nodes=() if back is None else back.prefer,
            nominated=resize is not None,
            resize_to=None if resize is None else resize.resize_to,
        )
        self.pending[job.id] = job
        self._pending_acc[job.org_idx] += job.acc
        self._pending_sizes[job.org_idx][job.acc] += 1

    def _dequeue(self, job: SimJob) -> None:
        del self.pending[job.id]
        job.pending = None
        self._pending_acc[job.org_idx] -= job.acc
        sizes = self._pending_sizes[job.org_idx]
        sizes[job.acc] -= 1
        if not sizes[job.acc]:
            del sizes[job.acc]

    def _start(self, job: SimJob, flavor: str, assignments: tuple[tuple[str, int], ...]) -> None:
        assert job.pending is not None, f"{job.id} placed but not pending"
        pending = job.pending
        self._dequeue(job)
        now = self.now
        job.start = now
        job.work_start = now + (self.model.restart_overhead_s if job.attempt else 0.0)
        job.ckpt_at = None
        job.next_ckpt = job.work_start + self.model.checkpoint_interval_s
        heapq.heappush(self._ckpt_due, (job.next_ckpt, job.id, job.attempt))
        job.running = RunningJob(
            id=job.id,
            spec=job.spec,
            priority=pending.priority,
            submitted_at=pending.submitted_at,
            started_at=now,
            flavor=flavor,
            assignments=assignments,
            service=job.attained,
        )
        self.running[job.id] = job
        for node, _ in assignments:
            self._on_node[node].add(job.id)
        g = job.spec.gang
        if g.elastic:
            size = job.running.replicas
            job.size_acc, job.rate = size * g.accelerators, size / g.replicas
            if size < g.replicas:
                self._small.add(job.id)  # a cycle when it may grow, room or not
                self._push(now + self._core.grow_after_seconds, WAKE, "")
        self.alloc[job.org_idx] += job.size_acc
        if job.rec.first_start is None:
            job.rec.first_start = now
            if self.estimator is not None:
                self.estimator.started(job.rec, now)
        self._push(job.work_start + job.remaining / job.rate, FINISH, f"{job.id}#{job.attempt}")
        job.hung_at = None
        hang = self.model.first_hang(self.config.seed, job.id, job.attempt, len(assignments))
        if hang is not None and hang < job.remaining / job.rate:
            self._push(job.work_start + hang, HANG, f"{job.id}#{job.attempt}")
        slow = self.model.first_slow(self.config.seed, job.id, job.attempt, len(assignments))
        job.slow_at = job.slow_node = job.finish_at = None
        if slow is not None and slow[0] < job.remaining / job.rate:
            job.slow_node = assignments[slow[1]][0]
            self._push(job.work_start + slow[0], SLOW, f"{job.id}#{job.attempt}")

    def _release(self, job: SimJob) -> None:
        assert job.running is not None
        for node, _ in job.running.assignments:
            self._on_node[node].discard(job.id)
        del self.running[job.id]
        self._small.discard(job.id)
        job.running = None
        self.alloc[job.org_idx] -= job.size_acc
        held = self.now - job.start
        job.rec.held_s += held
        job.rec.unheld_acc_s += held * (job.acc - job.size_acc)
        job.attained += held * job.size_acc

    def _complete(self, job: SimJob) -> None:
        if self.estimator is not None:
            self.estimator.learn(job.spec.org, self.now - job.start, job.spec.max_runtime_seconds)
        job.rec.lost_straggler_acc_s += self._slowness(job)
        self._release(job)
        job.remaining = 0.0
        job.rec.end = self.now
        self._finished += 1

    def _interrupt(
        self,
        job: SimJob,
        kept: float,
        failure: bool,
        preempted_by: str | None,
        requeue: bool = True,
        back: Return | None = None,
        resize: Preemption | None = None,
        hang: bool = False,
        straggler: bool = False,
    ) -> None:
        """End the attempt: keep ``kept`` seconds of progress, lose the rest, queue again
        (as ``back`` says, for a gang interrupted through no fault of its own) or, without
        ``requeue``, end the job as failed."""
        held = self.now - job.start
        if kept > 0:
            job.in_a_row = {}
        if hang or straggler:
            category = FailureCategory.HANG if hang else FailureCategory.STRAGGLER
            job.in_a_row[category] = job.in_a_row.get(category, 0) + 1
        if job.slow_at is None:
            lost = max(0.0, held * job.rate - kept) * job.size_acc / job.rate
        else:  # the pace changed: what was held less what was kept, less the slowness
            slowness = self._slowness(job)
            job.rec.lost_straggler_acc_s += slowness
            lost = max(0.0, held * job.size_acc - kept * job.acc - slowness)
        if straggler:
            job.rec.lost_straggler_acc_s += lost
            job.rec.stragglers += 1
        elif hang:
            job.rec.lost_hang_acc_s += lost
            job.rec.hangs += 1
        elif failure:
            job.rec.lost_failure_acc_s += lost
            job.rec.failures += 1
        else:
            job.rec.lost_preemption_acc_s += lost
        self._release(job)
        job.remaining -= kept
        job.attempt += 1
        if not requeue:
            job.rec.failed = True
            self._finished += 1
            return
        self._enqueue(job, preempted_by, back, resize)

    def _node_failed(self, node: str) -> None:
        self._schedule_failure(self.now)
        victims = sorted(self._on_node.get(node, ()))
        if not victims:
            return
        self.node_failures += 1
        for job_id in victims:
            job = self.jobs[job_id]
            assert job.running is not None
            kept = job.saved if job.running.terminating else self._checkpointed(job, self.now)
            # The service's rule for a lost node (trace jobs keep its default, always).
            earlier = {FailureCategory.INFRASTRUCTURE: job.rec.failures}
            again = job.spec.restart.verdict(FailureCategory.INFRASTRUCTURE, earlier, 0).restart
            # Replaced at once (the failure model), the failed node is avoided by this
            # job all the same, as the service avoids it.
            back = returning(
                FailureCategory.INFRASTRUCTURE,
                [name for name, _ in job.running.assignments],
                node,
                self._usable,
            )
            self._interrupt(job, kept, failure=True, preempted_by=None, requeue=again, back=back)
        self._want_cycle()

    def _unhang(self, job: SimJob) -> None:
        """A hung gang stopped (by the pool's detection, or later without it): back from its
        checkpoint before the hang, first in its org, as the service's loop does."""
        assert job.running is not None
        kept = self._checkpointed(job, self.now)
        again = self._again(job, FailureCategory.HANG, kept)
        nodes = [name for name, _ in job.running.assignments]
        back = returning(FailureCategory.HANG, nodes, None, self._usable)
        self._interrupt(job, kept, failure=True, preempted_by=None, requeue=again, back=back, hang=True)

    def _slow_down(self, job: SimJob) -> None:
        """A node of the gang turned slow: from now on it progresses straggler_slowdown
        times slower, to the attempt's end or until the pool moves it."""
        if job.hung_at is not None:
            return  # hung already: no pace to lose
        now, factor = self.now, self.model.straggler_slowdown
        job.slow_done = self._done(job, now)
        job.slow_at = now
        job.finish_at = now + (job.remaining - job.slow_done) * factor / job.rate
        ref = f"{job.id}#{job.attempt}"
        self._push(job.finish_at, FINISH, ref)
        heapq.heappush(self._ckpt_due, (now, job.id, job.attempt))  # the pace changed: recompute
        if self.model.straggler_detect_s is not None:
            self._push(now + self.model.straggler_detect_s, STRAGGLE, ref)

    def _done(self, job: SimJob, t: float) -> float:
        """Progress of the running attempt at ``t`` (seconds of work at full size)."""
        if job.slow_at is None or t <= job.slow_at:
            return min(max(t - job.work_start, 0.0) * job.rate, job.remaining)
        pace = job.rate / self.model.straggler_slowdown
        return min(job.slow_done + (t - job.slow_at) * pace, job.remaining)

    def _straggler_moved(self, job: SimJob) -> bool:
        """The pool's verdict on a slowed gang: moved off the slow node once the time
        lost to the slowness reaches the move's cost (work since its checkpoint plus the
        restart), as ``values.progress.straggler`` decides; else judged again later."""
        assert job.slow_at is not None and job.running is not None
        if job.hung_at is not None:
            return False  # the hang verdict ends it
        factor = self.model.straggler_slowdown
        lost = (self.now - job.slow_at) * (1 - 1 / factor)
        since = self.now - self._last_checkpoint_time(job, self.now)  # work_start without one
        if lost < since + self.model.restart_overhead_s:
            self._push(self.now + STRAGGLER_RECHECK_S, STRAGGLE, f"{job.id}#{job.attempt}")
            return False
        kept = self._checkpointed(job, self.now)
        again = self._again(job, FailureCategory.STRAGGLER, kept)
        nodes = [name for name, _ in job.running.assignments]
        back = returning(FailureCategory.STRAGGLER, nodes, job.slow_node, self._usable)
        self._interrupt(job, kept, failure=True, preempted_by=None, requeue=again, back=back, straggler=True)
        return True

    @staticmethod
    def _again(job: SimJob, category: FailureCategory, kept: float) -> bool:
        """The restart policy on a hang or a straggler: its earlier ones in a row (none if
        this attempt saved a checkpoint)."""
        earlier = {} if kept > 0 else job.in_a_row
        return job.spec.restart.verdict(category, earlier, 0).restart

    def _slowness(self, job: SimJob) -> float:
        """Accelerator-seconds the running attempt has wasted to its slowness so far."""
        if job.slow_at is None:
            return 0.0
        until = self.now if job.hung_at is None else min(self.now, job.hung_at)  # a hang's own loss after
        return max(0.0, until - job.slow_at) * job.size_acc * (1 - 1 / self.model.straggler_slowdown)

    def _usable(self, node: str) -> bool:
        return node not in self._unusable

    # -- progress and checkpoints --------------------------------------------------------

    def _checkpointed(self, job: SimJob, t: float) -> float:
        """Progress (seconds of work at full size) saved by the attempt's last checkpoint
        at ``t``; checkpoints come every interval of the attempt's own progress."""
        rate = job.rate
        if job.hung_at is not None:
            t = min(t, job.hung_at)  # no progress, and no checkpoint, while hung
        if job.slow_at is not None:  # checkpoints on the wall-clock grid, at the pace of the time
            return self._done(job, self._last_checkpoint_time(job, t))
        done = min(max(t - job.work_start, 0.0) * rate, job.remaining)
        interval = self.model.checkpoint_interval_s * rate
        return math.floor(done / interval) * interval

    def _last_checkpoint_time(self, job: SimJob, t: float) -> float:
        interval = self.model.checkpoint_interval_s
        return job.work_start + math.floor(max(t - job.work_start, 0.0) / interval) * interval

    def _refresh_checkpoints(self, now: float) -> None:
        due, later = self._ckpt_due, []
        while due and due[0][0] <= now:
            _, job_id, attempt = heapq.heappop(due)
            job = self.jobs[job_id]
            if job.running is None or job.attempt != attempt:
                continue  # that attempt has ended
            saved = self._checkpointed(job, now)
            if job.slow_at is None:
                job.next_ckpt = job.work_start + saved / job.rate + self.model.checkpoint_interval_s
                at = job.work_start + saved / job.rate if saved > 0 else None
            else:
                last = self._last_checkpoint_time(job, now)
                job.next_ckpt = last + self.model.checkpoint_interval_s
                at = last if saved > 0 else None
            later.append((job.next_ckpt, job_id, attempt))
            r = job.running
            if at != job.ckpt_at and r is not None:
                job.ckpt_at = at
                # Built directly: dataclasses.replace is several times slower on this hot path.
                job.running = RunningJob(
                    r.id,
                    r.spec,
                    r.priority,
                    r.submitted_at,
                    r.started_at,
                    r.flavor,
                    r.assignments,
                    at,
                    r.terminating,
                    r.preempted_for,
                    r.service,
                )
        for entry in later:
            heapq.heappush(due, entry)

    def _refresh_priorities(self, now: float) -> None:
        # A pending job's priority was set when it was queued, from what it had attained
        # by then; nothing it attains changes while it waits, so only running jobs move.
        for job in self.running.values():
            prio = self.policy.priority(job, now)
            if job.running is not None and job.running.priority != prio:
                job.running = replace(job.running, priority=prio)

    # -- the timeline ------------------------------------------------------------------------

    def _record(self) -> None:
        violating = []
        owed = []
        for i, nominal in enumerate(self.nominal):
            room = nominal - self.alloc[i]
            sizes = self._pending_sizes[i]
            v = room > 0 and bool(sizes) and min(sizes) <= room
            violating.append(v)
            owed.append(fillable(room, sizes) if v else 0)
        demand = tuple(a + p for a, p in zip(self.alloc, self._pending_acc, strict=True))
        self.timeline.record(
            self.now, tuple(self.alloc), demand, len(self.pending), tuple(violating), tuple(owed)
        )


def fillable(room: int, sizes: Counter[int]) -> int:
    """The most of ``room`` that pending jobs of these sizes (accelerators -> count) fill
    together: a bounded subset sum, as a bit set of reachable totals (counts split in
    powers of two, so a size is shifted log(count) times, not count times)."""
    reach, mask = 1, (1 << (room + 1)) - 1
    for size, count in sizes.items():
        if size > room or size <= 0:
            continue
        count, step = min(count, room // size), 1
        while count > 0:
            take = min(step, count)
            reach |= (reach << (size * take)) & mask
            count -= take
            step <<= 1
    return reach.bit_length() - 1


class _Effects:
    """The engine as the applier's ``Pool``: a placement starts in virtual time now, a
    victim exits after the grace period (``EXIT``), a rejection leaves the queue."""

    def __init__(self, engine: Simulation) -> None:
        self.engine = engine

    def place(self, placement: Placement) -> bool:
        self.engine._start(self.engine.jobs[placement.job_id], placement.flavor, placement.assignments)
        return True

    def preempt(self, preemption: Preemption) -> bool:
        return self.engine.preempt(preemption)

    def reject(self, rejection: Rejection) -> bool:
        return self.engine.reject(rejection)
