"""Persist: the store learns what the backend did (``persist_observation``) and what the
core decided (``persist_decisions``), one transaction each, before ``act`` touches the
backend. This is the only code that moves a job through the lifecycle table from the
control loop's side.

Order is what makes a crash harmless: a decision is committed before the backend is
asked to act on it, and the backend is asked again (idempotently, by gang key) by the
next cycle if the server died in between. Every transaction first checks the fence.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from scheduler import failures
from scheduler.applier import apply_decisions
from scheduler.backends.base import FINISHED, SURVIVOR_GRACE, GangStatus, Phase, gang_key
from scheduler.control import progress_watch
from scheduler.control.fence import Fence
from scheduler.control.node_validation import validate_nodes
from scheduler.control.observe import Observation
from scheduler.control.outcome import Actions, ApplyOptions, Outcome
from scheduler.control.restarts import STOPPED_WITH_GRACE, moved_off, release, requeue, restart
from scheduler.store import jobs as jobstore
from scheduler.store import nodes as nodestore
from scheduler.store import orgs as orgstore
from scheduler.store import usage as usagestore
from scheduler.store.db import Database
from scheduler.store.keys import among
from scheduler.store.tables import AllocationRow, JobRow
from scheduler.store.view import View
from values.decisions import Decisions, Placement, Preemption, PreemptReason, Rejection
from values.domain import JobSpec
from values.lifecycle import IllegalTransition, JobEvent, JobState
from values.restarts import FailureCategory, category_named

log = logging.getLogger(__name__)

# Usage of a running gang is charged this often (and always when it ends): fair share
# decays over days, so a coarser ledger costs nothing and spares a write per gang per cycle.
ACCRUE_EVERY = 30.0
INFRA = FailureCategory.INFRASTRUCTURE


# --- what the backend reports against what the store says ---------------------------


def persist_observation(
    db: Database,
    seen: Observation,
    fence: Fence,
    out: Outcome,
    acts: Actions,
    opts: ApplyOptions = ApplyOptions(),
    specs: jobstore.SpecCache | None = None,
) -> None:
    """``specs``: the loop's parsed specs, shared by every phase (each spec is parsed once).
    One transaction: the inventory, then every live allocation against the backend's
    gangs (level-triggered: the first cycle after a crash repairs what it interrupted)."""
    specs = specs or jobstore.SpecCache()
    now = seen.at
    statuses = dict(seen.gangs)
    with db.write() as s:
        fence.check(s, now)
        joined = nodestore.sync_inventory(s, seen.nodes, now)
        allocs = jobstore.live_allocations(s)
        # The jobs victims were stopped for are locked too: one may be nominated below.
        ids = [a.job_id for a in allocs] + [a.preempted_for for a in allocs if a.preempted_for]
        jobs = _locked_jobs(s, ids)
        failures.store_checkpoints(s, allocs, statuses, now, opts.checkpoint_root)
        tracked = progress_watch.Tracked.load(s, allocs)
        blames: set[str] = set()
        for a in allocs:
            st = statuses.pop(gang_key(a.job_id, a.attempt), None)
            gone = st is None or st.settled
            if gone or now - a.accounted_until >= ACCRUE_EVERY:
                ended = st.at if st is not None and gone and st.at is not None else now
                usagestore.accrue(s, a, min(ended, now))
            job = jobs[a.job_id]
            try:
                if a.state == "active":
                    blamed = failures.blamed_node(s, st)
                    if blamed is not None:
                        orgstore.audit(
                            s, now, "scheduler", failures.BLAMED, blamed, job=job.id, attempt=a.attempt
                        )
                        blames.add(blamed)
                    _active(s, job, a, st, now, acts, out, specs)
                    if st is not None and st.progress:
                        slow = progress_watch.judge(
                            s, job, a, st, tracked, now, opts.progress, out, acts, specs
                        )
                        if slow is not None:
                            blames.add(slow)
                else:
                    _stopping(s, job, a, st, now, acts, out, specs, jobs.get(a.preempted_for or ""))
            except IllegalTransition:
                log.exception("refused an illegal transition for job %s", job.id)
        validate_nodes(s, statuses, joined, allocs, now, opts, acts, out)
        for st in statuses.values():  # gangs no live allocation accounts for
            if st.settled:
                acts.forgets.append(st.key)
            elif st.phase is not Phase.STOPPING:
                log.warning("stopping orphan gang %s", st.key)
                acts.stops.append((st.key, 0.0))
        if blames:
            out.quarantined += failures.quarantine(s, opts.quarantine, blames, now)


def _locked_jobs(s: Session, ids: list[str]) -> dict[str, JobRow]:
    """The jobs this transaction decides about, locked (PostgreSQL) so that an API call
    cannot change one between our read and our guarded write; SQLite writers are
    serialized anyway. Jobs are always locked before allocations, as the API does."""
    if not ids:
        return {}
    stmt = select(JobRow).where(among(JobRow.id, ids)).order_by(col(JobRow.id)).with_for_update()
    return {j.id: j for j in s.exec(stmt).all()}


def _active(
    s: Session,
    job: JobRow,
    a: AllocationRow,
    st: GangStatus | None,
    now: float,
    acts: Actions,
    out: Outcome,
    specs: jobstore.SpecCache,
) -> None:
    key = gang_key(a.job_id, a.attempt)
    if st is None:
        if job.state == JobState.ADMITTED:
            acts.launches.append(
                (a, job, specs.get(job))
            )  # committed but never launched: the server died in between
        else:
            restart(
                s,
                job,
                a,
                now,
                out,
                specs,
                category=INFRA,
                node=None,
                message="the backend no longer runs the gang",
            )
        return
    if job.state == JobState.ADMITTED:
        jobstore.move(s, job, JobEvent.LAUNCHED, now, message="found running after a restart")
    if job.state == JobState.STARTING and st.phase in (Phase.RUNNING, Phase.STOPPING, Phase.SUCCEEDED):
        _started(s, job, now, out)
    if st.phase is Phase.SUCCEEDED:
        jobstore.move(s, job, JobEvent.SUCCEEDED, now, reason="exit", exit_code=0, finished_at=st.at or now)
        release(s, a, now)
        acts.forgets.append(key)
        out.finished.append((job.id, JobState.SUCCEEDED.value))
    elif st.phase is Phase.FAILED:
        restart(
            s, job, a, now, out, specs, category=failures.category_of(st.exit_code, st.message), node=st.node,
            message=st.message, exit_code=st.exit_code, settled=st.settled,
        )  # fmt: skip
        _hold_until_gone(st, key, acts)
    elif st.phase in (Phase.LOST, Phase.STOPPED):
        restart(
            s, job, a, now, out, specs, category=INFRA, node=st.node, message=st.message or st.phase.value,
            settled=st.settled,
        )  # fmt: skip
        _hold_until_gone(st, key, acts)
    elif job.state == JobState.RUNNING and _timed_out(specs.get(job), a, now):
        # Stopped like a preemption (its grace to checkpoint), then requeued or failed.
        restart(
            s, job, a, now, out, specs, category=FailureCategory.TIMEOUT, node=None,
            message="ran past max_runtime_seconds", settled=False,
        )  # fmt: skip
        acts.stops.append((key, specs.get(job).grace_period_seconds))


def _stopping(
    s: Session,
    job: JobRow,
    a: AllocationRow,
    st: GangStatus | None,
    now: float,
    acts: Actions,
    out: Outcome,
    specs: jobstore.SpecCache,
    beneficiary: JobRow | None = None,
) -> None:
    key = gang_key(a.job_id, a.attempt)
    if st is not None and not st.settled:
        if st.phase is not Phase.STOPPING:
            grace = specs.get(job).grace_period_seconds if st.phase not in FINISHED else SURVIVOR_GRACE
            acts.stops.append((key, grace))
        return
    release(s, a, st.at if st is not None and st.at is not None else now)
    if st is not None:
        acts.forgets.append(key)
    if beneficiary is not None and beneficiary.state == JobState.PENDING and not beneficiary.nominated:
        # The room this victim freed is the beneficiary's: it goes first from now on, so
        # that a borrower the fair order reaches first cannot take it.
        jobstore.touch(s, beneficiary, nominated=True)
    if job.state == JobState.PREEMPTED and st is not None and st.phase is Phase.SUCCEEDED:
        jobstore.move(s, job, JobEvent.SUCCEEDED, now, reason="exit", exit_code=0, finished_at=st.at or now)
        out.finished.append((job.id, JobState.SUCCEEDED.value))
    elif job.state in (JobState.PREEMPTED, JobState.RESTARTING):
        # Gone now: a checkpoint saved in the grace period counts.
        if job.state == JobState.PREEMPTED:
            out.lost.append((job.org, "preempted", failures.lost_work(s, a, a.released_at or now)))
        elif (category := category_named(job.reason)) is not None and category in STOPPED_WITH_GRACE:
            out.lost.append((job.org, category.failure_class, failures.lost_work(s, a, a.released_at or now)))
        if job.state == JobState.PREEMPTED and job.reason == PreemptReason.HEALTH.value:
            moved_off(s, job, a, now, out, specs)
        else:
            requeue(s, job, now)


def _started(s: Session, job: JobRow, now: float, out: Outcome) -> None:
    first = job.started_at is None
    jobstore.move(s, job, JobEvent.STARTED, now, started_at=now if first else job.started_at)
    if job.attempt == 0:
        out.started.append((job.id, max(0.0, now - job.submitted_at)))
    elif (recovered := failures.recovery(s, job, now)) is not None:
        out.recovered.append(recovered)


def _timed_out(spec: JobSpec, a: AllocationRow, now: float) -> bool:
    """Each attempt has the whole limit, from its admission: the job's ``started_at`` is
    its first start, and time spent waiting between attempts is not running time."""
    limit = spec.max_runtime_seconds
    return limit is not None and now > a.created_at + limit


def _hold_until_gone(st: GangStatus, key: str, acts: Actions) -> None:
    """A failed gang's survivors may still run on its nodes: they are stopped, and the
    allocation is released (by ``_stopping``) only once the backend reports them gone."""
    if st.settled:
        acts.forgets.append(key)
    else:
        acts.stops.append((key, SURVIVOR_GRACE))


# --- what the core decided ------------------------------------------------------------


def persist_decisions(
    db: Database,
    view: View,
    decisions: Decisions,
    fence: Fence,
    now: float,
    out: Outcome,
    acts: Actions,
    specs: jobstore.SpecCache,
) -> None:
    """One transaction: the decisions, applied in the one order (``scheduler.applier``),
    each only for a job that is still as ``decide`` saw it."""
    with db.write() as s:
        fence.check(s, now)
        ids = [p.job_id for p in decisions.placements] + [r.job_id for r in decisions.rejections]
        apply_decisions(decisions, _Store(s, _locked_jobs(s, ids), view, now, out, acts, specs))


@dataclass
class _Store:
    """The store as the applier's ``Pool``, inside the decisions' transaction."""

    s: Session
    fresh: dict[str, JobRow]  # the placed and rejected jobs, locked
    view: View
    now: float
    out: Outcome
    acts: Actions
    specs: jobstore.SpecCache

    def place(self, p: Placement) -> bool:
        s, now = self.s, self.now
        job = self._unchanged(p.job_id)
        if job is None:
            return False
        spec = self.specs.get(job)
        alloc = AllocationRow(
            job_id=job.id, attempt=job.attempt, org=job.org, team=job.team, flavor=p.flavor,
            assignments=json.dumps([list(x) for x in p.assignments]),
            accelerators=spec.gang.accelerators * sum(n for _, n in p.assignments),
            reason=p.reason.value, created_at=now, accounted_until=now,
        )  # fmt: skip
        try:
            with s.begin_nested():
                nodes = ", ".join(f"{n}x{k}" for n, k in p.assignments)
                jobstore.move(
                    s, job, JobEvent.ADMIT, now, reason=p.reason.value, message=f"{p.flavor} on {nodes}",
                    estimated_start=None, nominated=False, expedite=False, prefer_nodes="[]", resize_to=None,
                )  # fmt: skip
                s.add(alloc)
                s.flush()
        except (jobstore.StaleWrite, IntegrityError):
            self.out.skipped.append(job.id)
            return False
        self.acts.launches.append((alloc, job, spec))
        self.out.admitted.append(job.id)
        return True

    def preempt(self, p: Preemption) -> bool:
        """The victim keeps its allocation (``stopping``) until its gang is gone; then
        ``_stopping`` requeues it and nominates the job it made room for."""
        s, now, reason = self.s, self.now, p.reason.value
        job = s.get(JobRow, p.job_id, with_for_update=True)
        a = jobstore.allocation(s, p.job_id, job.attempt) if job is not None else None
        if (
            job is None
            or a is None
            or a.state != "active"
            or job.state not in (JobState.STARTING, JobState.RUNNING)
        ):
            self.out.skipped.append(p.job_id)
            return False
        text = p.message or (f"to make room for {p.beneficiary}" if p.beneficiary else reason)
        # A resize comes back first, offered the ranks it keeps (``requeue`` says so).
        resize = (
            {"expedite": True, "nominated": True, "prefer_nodes": json.dumps(p.kept_nodes),
             "resize_to": p.resize_to}
            if p.resize else {}
        )  # fmt: skip
        jobstore.move(
            s, job, JobEvent.PREEMPT, now, reason=reason, message=text, preempted_by=p.beneficiary, **resize
        )
        a.state, a.preempted_for, a.stop_requested_at = "stopping", p.beneficiary, now
        s.add(a)
        self.acts.stops.append((gang_key(job.id, job.attempt), self.specs.get(job).grace_period_seconds))
        self.out.preempted.append((p.job_id, reason))
        if p.resize:
            self.out.resized.append((p.job_id, "grow" if p.reason is PreemptReason.GROW else "shrink"))
        return True

    def reject(self, r: Rejection) -> bool:
        job = self._unchanged(r.job_id)
        if job is None:
            return False
        jobstore.move(
            self.s, job, JobEvent.REJECT, self.now, reason=r.reason.value, message=r.message,
            finished_at=self.now,
        )  # fmt: skip
        self.out.rejected.append(job.id)
        return True

    def _unchanged(self, job_id: str) -> JobRow | None:
        """The job as decide() saw it, or None if it changed since (cancelled, ...)."""
        seen = self.view.jobs.get(job_id)
        job = self.fresh.get(job_id)
        if seen is None or job is None or job.version != seen.version or job.state != JobState.PENDING:
            self.out.skipped.append(job_id)
            return None
        return job


_NOTE_CHUNK = 250


def note_pending(db: Database, view: View, decisions: Decisions, fence: Fence, now: float) -> None:
    """Store each pending job's reason and estimate where they changed, in short
    transactions, so that submissions are not held behind thousands of updates."""
    changes = []
    for job_id, status in decisions.pending.items():
        seen = view.jobs.get(job_id)
        estimate = status.estimated_start
        if estimate is not None and estimate == float("inf"):
            estimate = None
        if seen is None or seen.state != JobState.PENDING:
            continue
        same_estimate = (estimate is None) == (seen.estimated_start is None) and (
            estimate is None or abs(estimate - (seen.estimated_start or 0.0)) < 1.0
        )
        if seen.reason != status.reason.value or seen.message != status.message or not same_estimate:
            changes.append((seen, status.reason.value, status.message, estimate))
    for start in range(0, len(changes), _NOTE_CHUNK):
        with db.write() as s:
            fence.check(s, now)
            # Guarded by the version decide() saw: a job that moved on is left alone.
            jobstore.touch_many(
                s,
                [
                    (seen, {"reason": reason, "message": message, "estimated_start": estimate})
                    for seen, reason, message, estimate in changes[start : start + _NOTE_CHUNK]
                ],
            )
