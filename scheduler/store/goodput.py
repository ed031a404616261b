"""Jobs' attempts as ``values.goodput`` accounts them, read from what the store already
keeps: allocations (held from, until), events (when each attempt ran and what ended it)
and checkpoints (the newest of each attempt). Three queries for any number of jobs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlmodel import Session, col, func, select

from scheduler.store.keys import among
from scheduler.store.tables import AllocationRow, CheckpointRow, JobEventRow
from values import goodput
from values.decisions import PreemptReason
from values.lifecycle import JobEvent
from values.restarts import FailureCategory

_ENDS = (JobEvent.RESTART.value, JobEvent.PREEMPT.value, JobEvent.FAILED.value)


def _held_after(since: float) -> Any:
    return col(AllocationRow.released_at).is_(None) | (col(AllocationRow.released_at) >= since)


def lost_to(event: str, reason: str | None) -> str:
    """The loss reason of an attempt that ended with ``event`` (restart, preempt, failed)."""
    if event == JobEvent.PREEMPT.value:
        return goodput.FAILURE if reason == PreemptReason.HEALTH.value else goodput.PREEMPTION
    if reason == FailureCategory.HANG.value:
        return goodput.HANG
    if reason == FailureCategory.STRAGGLER.value:
        return goodput.STRAGGLER
    return goodput.FAILURE


def attempts(
    s: Session, job_ids: Sequence[str], now: float, since: float | None = None
) -> dict[str, list[goodput.Attempt]]:
    """Each job's attempts that held nodes (released after ``since``, or still holding)."""
    if not job_ids:
        return {}
    stmt = select(AllocationRow).where(among(AllocationRow.job_id, job_ids))
    if since is not None:
        stmt = stmt.where(
            (col(AllocationRow.released_at).is_(None)) | (col(AllocationRow.released_at) >= since)
        )
    allocs = s.exec(stmt).all()
    if not allocs:
        return {}
    ids = sorted({a.job_id for a in allocs})
    started: dict[tuple[str, int], float] = {}
    ended: dict[tuple[str, int], str] = {}
    events = s.exec(
        select(JobEventRow)
        .where(among(JobEventRow.job_id, ids), col(JobEventRow.event).in_([JobEvent.STARTED.value, *_ENDS]))
        .order_by(col(JobEventRow.id))
    ).all()
    for e in events:
        key = (e.job_id, e.attempt)
        if e.event == JobEvent.STARTED.value:
            started.setdefault(key, e.at)
        else:
            ended.setdefault(key, lost_to(e.event, e.reason))
    saved = s.exec(
        select(CheckpointRow.job_id, CheckpointRow.attempt, func.max(CheckpointRow.at))
        .where(among(CheckpointRow.job_id, ids))
        .group_by(col(CheckpointRow.job_id), col(CheckpointRow.attempt))
    ).all()
    last = {(job_id, attempt): at for job_id, attempt, at in saved}
    out: dict[str, list[goodput.Attempt]] = {}
    for a in sorted(allocs, key=lambda a: (a.job_id, a.attempt)):
        key = (a.job_id, a.attempt)
        out.setdefault(a.job_id, []).append(
            goodput.Attempt(
                attempt=a.attempt,
                accelerators=a.accelerators,
                held_from=a.created_at,
                held_until=a.released_at if a.released_at is not None else now,
                running_from=started.get(key),
                last_checkpoint_at=last.get(key),
                lost_to=ended.get(key),
            )
        )
    return out


def of_job(s: Session, job_id: str, now: float) -> goodput.Goodput:
    return goodput.account(attempts(s, [job_id], now).get(job_id, []))


def by_org(
    s: Session, orgs: Sequence[str], since: float, until: float, now: float
) -> dict[str, goodput.Goodput]:
    """Each org's jobs' time within [since, until]."""
    stmt = select(AllocationRow.job_id, AllocationRow.org).where(
        among(AllocationRow.org, orgs), _held_after(since), col(AllocationRow.created_at) < until
    )
    org_of = {job_id: org for job_id, org in s.exec(stmt).all()}
    out = {org: goodput.Goodput() for org in orgs}
    for job_id, tries in attempts(s, sorted(org_of), now, since).items():
        out[org_of[job_id]].add(goodput.account(tries, since, until))
    return out
