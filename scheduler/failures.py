"""What a failed or interrupted gang costs, and whom it blames: the applier's bookkeeping
for quarantine, lost work, time to recover and the checkpoints backends saw.

Called inside the applier's transactions; the quarantine rule itself is pure
(``scheduler.quarantine``).
"""

from __future__ import annotations

import json
import logging

from sqlmodel import Session, col, func, select

from scheduler.backends.base import JOBS_OWN_MEMORY, GangStatus, Phase, gang_key
from scheduler.checkpoint_folder import outside_problem
from scheduler.quarantine import Blame, QuarantineRule, to_quarantine
from scheduler.store import nodes as nodestore
from scheduler.store import orgs as orgstore
from scheduler.store.keys import among
from scheduler.store.tables import AllocationRow, AuditRow, CheckpointRow, JobEventRow, JobRow, NodeRow
from values.decisions import PreemptReason
from values.domain import Health
from values.lifecycle import JobEvent
from values.restarts import IN_A_ROW, FailureCategory, category_named

log = logging.getLogger(__name__)

BLAMED = "node.blamed"  # audit action: a failure of this job attributed to this node
STRAGGLER = "straggler"  # a blame's ``why`` (and the job event) of a straggler verdict


def blamed_node(s: Session, st: GangStatus | None) -> str | None:
    """The node a failed gang blames, if the failure says something about the node (see
    scheduler.quarantine: a node that died is not blamed for its jobs)."""
    if st is None or st.node is None:
        return None
    if st.phase is Phase.FAILED:
        return st.node if killed_by_signal(st.exit_code) and not jobs_own_memory(st.message) else None
    if st.phase is Phase.LOST:
        row = s.get(NodeRow, st.node)
        if row is not None and row.present and row.health == Health.HEALTHY.value:
            return st.node
    return None


def killed_by_signal(exit_code: int | None) -> bool:
    """A replica that died of a signal (negative code from Python's subprocess, or the
    shell's 128+N): a crash (SIGSEGV, SIGBUS from bad memory, the OOM killer's SIGKILL)
    that may be the node's doing. A plain non-zero exit is the job's own verdict on
    itself and never blames the node: a pool of buggy jobs must not cordon itself."""
    return exit_code is not None and (exit_code < 0 or 128 < exit_code < 160)


def jobs_own_memory(message: str) -> bool:
    """The backend killed the replica for the memory the job used (``JOBS_OWN_MEMORY``)."""
    return any(marker in message for marker in JOBS_OWN_MEMORY)


def category_of(exit_code: int | None, message: str) -> FailureCategory:
    """The category of a gang's own failure (a non-zero exit), by what its backend saw:
    SIGKILL is the kernel OOM killer's signal (nobody else sends it to a job the pool did
    not ask to stop), and Kubernetes and Ray name their memory kills; other signals are
    crashes; the rest are the job's exits."""
    if exit_code in (137, -9) or jobs_own_memory(message):
        return FailureCategory.OOM
    if killed_by_signal(exit_code):
        return FailureCategory.SIGNAL
    return FailureCategory.EXIT


def restart_counts(s: Session, job: JobRow) -> dict[FailureCategory, int]:
    """The restarts the job had in its earlier attempts, per category: from its events,
    so they survive a restart of the server and need no counter of their own. A restart
    event's reason is its category; a move off an unhealthy node is a health preemption.
    Hangs and stragglers count only since the last attempt that saved a checkpoint
    (``values.restarts.IN_A_ROW``): a long run that meets one every few hours keeps going,
    one that hangs before it saves anything stops after its limit."""
    saved = s.exec(select(func.max(CheckpointRow.attempt)).where(CheckpointRow.job_id == job.id)).one()
    stmt = (
        select(JobEventRow.event, JobEventRow.reason, func.count())
        .where(
            JobEventRow.job_id == job.id,
            JobEventRow.attempt < job.attempt,
            col(JobEventRow.event).in_([JobEvent.RESTART.value, JobEvent.PREEMPT.value]),
        )
        .group_by(col(JobEventRow.event), col(JobEventRow.reason))
    )
    counts: dict[FailureCategory, int] = {}
    for event, reason, n in s.exec(stmt).all():
        if event == JobEvent.PREEMPT.value:
            category = FailureCategory.HEALTH if reason == PreemptReason.HEALTH.value else None
        else:
            category = category_named(reason)
        if category is not None and category not in IN_A_ROW:
            counts[category] = counts.get(category, 0) + int(n)
    in_a_row = (
        select(JobEventRow.reason, func.count())
        .where(
            JobEventRow.job_id == job.id,
            JobEventRow.attempt < job.attempt,
            JobEventRow.attempt >= (saved if saved is not None else -1),
            JobEventRow.event == JobEvent.RESTART.value,
            among(JobEventRow.reason, sorted(c.value for c in IN_A_ROW)),
        )
        .group_by(col(JobEventRow.reason))
    )
    for reason, n in s.exec(in_a_row).all():
        counts[FailureCategory(str(reason))] = int(n)
    return counts


def quarantine(s: Session, rule: QuarantineRule, nodes: set[str], now: float) -> list[str]:
    """Cordon the nodes among ``nodes`` that the rule now finds guilty; those cordoned now."""
    stmt = select(AuditRow).where(
        AuditRow.action == BLAMED,
        among(AuditRow.target, sorted(nodes)),
        AuditRow.at >= now - rule.window_seconds,
    )
    done: list[str] = []
    blames = [Blame(r.target, str(json.loads(r.detail).get("job", "")), r.at) for r in s.exec(stmt).all()]
    for name in to_quarantine(rule, blames, now):
        row = s.get(NodeRow, name, with_for_update=True)
        if row is None or row.cordoned:
            continue
        nodestore.set_cordon(s, row, True, now)
        jobs = sorted({b.job_id for b in blames if b.node == name})
        orgstore.audit(s, now, "scheduler", "node.quarantined", name, jobs=jobs, window=rule.window_seconds)
        log.warning(
            "quarantined node %s: failures of jobs %s within %.0fs",
            name,
            ", ".join(jobs),
            rule.window_seconds,
        )
        done.append(name)
    return done


def straggler_blames(s: Session, since: float) -> dict[str, str]:
    """The nodes straggler verdicts blamed since ``since``: each with the latest verdict's
    message (the health model weighs them against the nodes' own evidence)."""
    stmt = select(AuditRow).where(AuditRow.action == BLAMED, col(AuditRow.at) >= since)
    out = {}
    for row in s.exec(stmt.order_by(col(AuditRow.at))).all():
        detail = json.loads(row.detail)
        if detail.get("why") == STRAGGLER:
            out[row.target] = str(detail.get("message") or f"job {detail.get('job')}")
    return out


def store_checkpoints(
    s: Session, allocs: list[AllocationRow], statuses: dict[str, GangStatus], now: float, root: str
) -> None:
    """Checkpoints the backend saw the gangs report, where newer than the stored one and
    inside the job's own folder under ``root``: stored before the gang's exit is handled,
    so a restart in this very cycle resumes from it."""
    seen = {
        a.job_id: (a.attempt, st.checkpoint)
        for a in allocs
        if (st := statuses.get(gang_key(a.job_id, a.attempt))) is not None and st.checkpoint is not None
    }
    if not seen:
        return
    # Runs every cycle for every gang that reported one: the newest step per job, not
    # every stored row (a long job accumulates hundreds).
    stmt = (
        select(CheckpointRow.job_id, func.max(func.coalesce(CheckpointRow.step, -1)))
        .where(among(CheckpointRow.job_id, seen))
        .group_by(col(CheckpointRow.job_id))
    )
    latest: dict[str, int] = {job_id: int(step) for job_id, step in s.exec(stmt).all()}
    for job_id, (attempt, (step, path)) in seen.items():
        if step <= latest.get(job_id, -1):
            continue
        # Checked only when new: the rule may look at the filesystem (links).
        if (problem := outside_problem(path, root, job_id)) is not None:
            log.warning("job %s reported checkpoint %r, not stored: it %s", job_id, path[:200], problem)
            continue
        s.add(CheckpointRow(job_id=job_id, attempt=attempt, path=path, step=step, at=now))


def last_checkpoint_at(s: Session, a: AllocationRow) -> float | None:
    """When the newest checkpoint of this attempt was stored; None without one."""
    stmt = select(func.max(CheckpointRow.at)).where(
        CheckpointRow.job_id == a.job_id, CheckpointRow.at >= a.created_at
    )
    return s.exec(stmt).one()


def lost_work(s: Session, a: AllocationRow, ended: float) -> float:
    """Accelerator-seconds of this attempt after its newest checkpoint (all of it without one)."""
    since = last_checkpoint_at(s, a) or a.created_at
    return a.accelerators * max(0.0, ended - since)


def recovery(s: Session, job: JobRow, now: float) -> tuple[str, float] | None:
    """(reason, seconds) from the interruption that ended the job's previous attempt to now."""
    stmt = (
        select(JobEventRow)
        .where(
            JobEventRow.job_id == job.id,
            JobEventRow.attempt == job.attempt - 1,
            col(JobEventRow.event).in_([JobEvent.RESTART.value, JobEvent.PREEMPT.value]),
        )
        .order_by(col(JobEventRow.id).desc())
    )
    interrupted = s.exec(stmt).first()
    if interrupted is None:
        return None
    if interrupted.event == JobEvent.PREEMPT.value:
        reason = "preempted"
    else:  # the metric's label is the failure's class, as the restarts counter's is
        category = category_named(interrupted.reason)
        reason = category.failure_class if category is not None else (interrupted.reason or "restart")
    return reason, max(0.0, now - interrupted.at)
