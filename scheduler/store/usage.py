"""The usage ledger: accelerator-seconds per org, team and flavor, per hour.

It feeds fair share (decayed by the policy's half-life) and `trainpool usage`.
"""

from __future__ import annotations

import math
from collections import defaultdict

from sqlalchemy import or_
from sqlmodel import Session, col, select

from quota.fairshare import decay
from scheduler.store.tables import AllocationRow, JobRow, TokenRow, UsageRow

INTERVAL = 3600.0
# Buckets older than this many half-lives weigh < 0.1 %: not worth reading.
_HORIZON_HALF_LIVES = 10


def bucket(t: float) -> float:
    return math.floor(t / INTERVAL) * INTERVAL


def accrue(session: Session, alloc: AllocationRow, until: float) -> float:
    """Charge ``alloc`` from where it was last charged up to ``until``; returns seconds."""
    start = max(alloc.accounted_until, alloc.created_at)
    if until <= start:
        return 0.0
    amount = alloc.accelerators * (until - start)
    key = (alloc.org, alloc.team or "", alloc.flavor, bucket(until))
    row = session.get(UsageRow, key)
    if row is None:
        row = UsageRow(org=key[0], team=key[1], flavor=key[2], interval_start=key[3], accelerator_seconds=0.0)
    row.accelerator_seconds += amount
    session.add(row)
    alloc.accounted_until = until
    session.add(alloc)
    return until - start


def decayed(session: Session, now: float, half_life: float) -> dict[str, dict[str, float]]:
    """Usage per org and flavor, each interval weighted by 2^(-age / half_life)."""
    since = now - _HORIZON_HALF_LIVES * half_life
    rows = session.exec(select(UsageRow).where(col(UsageRow.interval_start) >= bucket(since))).all()
    out: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for r in rows:
        age = max(0.0, now - (r.interval_start + INTERVAL / 2))
        out[r.org][r.flavor] += decay(r.accelerator_seconds, age, half_life)
    return {org: dict(flavors) for org, flavors in out.items()}


def by_user(
    session: Session, *, since: float, until: float, now: float, orgs: list[str] | None
) -> list[dict[str, object]]:
    """Accelerator-hours per org and user (the submitting token's name, else its id),
    from the allocations themselves: the hourly ledger has no user, and who submitted
    what is an accounting question (Slurm's ``sreport user``), not a fair-share one."""
    stmt = (
        select(AllocationRow, JobRow.submitted_by, TokenRow.name)
        .join(JobRow, col(JobRow.id) == col(AllocationRow.job_id))
        .join(TokenRow, col(TokenRow.id) == col(JobRow.submitted_by), isouter=True)
        .where(col(AllocationRow.created_at) < until)
        .where(or_(col(AllocationRow.released_at).is_(None), col(AllocationRow.released_at) > since))
    )
    if orgs is not None:
        stmt = stmt.where(col(AllocationRow.org).in_(orgs))
    totals: dict[tuple[str, str], float] = defaultdict(float)
    for alloc, token_id, token_name in session.exec(stmt).all():
        end = min(until, now if alloc.released_at is None else alloc.released_at)
        start = max(since, alloc.created_at)
        if end > start:
            totals[(alloc.org, token_name or token_id or "(unknown)")] += alloc.accelerators * (end - start)
    return [
        {"org": org, "user": user, "accelerator_hours": round(secs / 3600.0, 6)}
        for (org, user), secs in sorted(totals.items())
    ]


def report(
    session: Session,
    *,
    since: float,
    until: float,
    by: str,
    orgs: list[str] | None,
) -> list[dict[str, object]]:
    """Accelerator-hours grouped by ``by`` (org, team or flavor)."""
    stmt = select(UsageRow).where(
        col(UsageRow.interval_start) >= bucket(since), col(UsageRow.interval_start) < until
    )
    if orgs is not None:
        stmt = stmt.where(col(UsageRow.org).in_(orgs))
    totals: dict[tuple[str, ...], float] = defaultdict(float)
    for r in session.exec(stmt).all():
        key = {"org": (r.org,), "team": (r.org, r.team), "flavor": (r.flavor,)}[by]
        totals[key] += r.accelerator_seconds
    fields = {"org": ("org",), "team": ("org", "team"), "flavor": ("flavor",)}[by]
    # A job submitted without a team is charged to the org alone: "" in the ledger's key.
    return [
        {**dict(zip(fields, key, strict=True)), "accelerator_hours": round(secs / 3600.0, 6)}
        for key, secs in sorted(totals.items())
    ]
