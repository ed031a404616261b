"""/v1/orgs/{org}/quotas and /standing: an org's quotas, how they are used, and safe edits.

A change that guarantees more of a flavor than the pool has (the orgs' nominals summed)
is refused unless asked for with ``force``: over-committed guarantees cannot all be met
at once, so some org's "guaranteed" quota would wait for another's jobs to end.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import ValidationError
from sqlmodel import Session, col, select

from quota.standing import standings
from scheduler.api.auth import authenticate, require_org, require_pool_admin
from scheduler.api.context import ServerContext, get_ctx
from scheduler.api.errors import ApiError, not_found
from scheduler.api.schemas import QuotaPatch, QuotaRequest
from scheduler.store import jobs as jobstore
from scheduler.store import orgs as orgstore
from scheduler.store.tables import JobRow, QuotaRow
from scheduler.store.tokens import Principal
from scheduler.store.view import flavors_of, pool_shape
from values.errors import validation_problems
from values.quotas import FlavorQuota
from values.snapshot import Snapshot

router = APIRouter(prefix="/v1", tags=["quotas"])
Ctx = Annotated[ServerContext, Depends(get_ctx)]
Who = Annotated[Principal, Depends(authenticate)]
Force = Annotated[bool, Query(description="Store a change that over-commits the pool's guarantees.")]


def quota_out(q: Any) -> dict[str, Any]:
    return {"nominal": q.nominal, "borrowing_limit": q.borrowing_limit, "lending_limit": q.lending_limit}


def existing_org(s: Session, org: str) -> None:
    if orgstore.get_org(s, org) is None:
        raise not_found("org", org)


@router.get("/orgs/{org}/quotas")
def get_quotas(org: str, ctx: Ctx, who: Who) -> dict[str, Any]:
    require_org(who, org)
    with ctx.db.read() as s:
        existing_org(s, org)
        return {q.flavor: quota_out(q) for q in orgstore.quotas(s, org)}


@router.put("/orgs/{org}/quotas/{flavor}")
def set_quota(
    org: str, flavor: str, req: QuotaRequest, ctx: Ctx, who: Who, force: Force = False
) -> dict[str, Any]:
    """Replace the quota: a limit left out is no limit."""
    require_pool_admin(who)
    with ctx.db.write() as s:
        return _store_quota(s, org, flavor, req.model_dump(), ctx, who, force)


@router.patch("/orgs/{org}/quotas/{flavor}")
def change_quota(
    org: str, flavor: str, req: QuotaPatch, ctx: Ctx, who: Who, force: Force = False
) -> dict[str, Any]:
    """Change only the fields given; a limit given as null becomes no limit."""
    require_pool_admin(who)
    if "nominal" in req.model_fields_set and req.nominal is None:
        raise ApiError(422, "must be a whole number, not null", "nominal")
    with ctx.db.write() as s:
        current = s.get(QuotaRow, (org, flavor), with_for_update=True)
        fields = quota_out(current) if current is not None else QuotaRequest().model_dump()
        changed = {**fields, **req.model_dump(include=req.model_fields_set)}
        return _store_quota(s, org, flavor, changed, ctx, who, force)


def _store_quota(
    s: Session, org: str, flavor: str, fields: dict[str, Any], ctx: ServerContext, who: Principal, force: bool
) -> dict[str, Any]:
    try:
        quota = FlavorQuota(**fields)
    except ValidationError as exc:
        field, message = validation_problems(exc)[0]
        raise ApiError(422, message, field or "body") from None
    existing_org(s, org)
    if flavor not in {f.name for f in flavors_of(s, ctx.pool)}:
        raise ApiError(422, f"unknown flavor '{flavor}'", "flavor")
    warning = _over_commit(s, ctx, org, flavor, quota.nominal)
    if warning is not None and not force:
        raise ApiError(409, f"{warning}; pass force to store it anyway (quota set --force)", "nominal")
    row = orgstore.set_quota(s, org, flavor, quota, ctx.clock(), who.token_id)
    return {"org": org, "flavor": flavor, **quota_out(row), "warning": warning}


def _over_commit(s: Session, ctx: ServerContext, org: str, flavor: str, nominal: int) -> str | None:
    """Why a new nominal over-commits the flavor, if it raises the guarantees above the
    pool's capacity (a change that lowers them is always allowed: it only helps)."""
    others = sum(q.nominal for q in orgstore.quotas(s) if q.flavor == flavor and q.org != org)
    current = s.get(QuotaRow, (org, flavor))
    before = others + (current.nominal if current is not None else 0)
    after = others + nominal
    capacity = capacity_of(pool_shape(s, ctx.pool))[flavor]
    if after <= capacity or after <= before:
        return None
    return (
        f"the orgs' nominal {flavor} quotas would sum to {after}, and the pool has {capacity}: "
        "guarantees beyond the pool cannot all be met at once"
    )


def capacity_of(shape: Snapshot) -> Counter[str]:
    """Accelerators per flavor over the pool's nodes, as the core's quota book counts them."""
    out: Counter[str] = Counter({f.name: 0 for f in shape.flavors})
    for n in shape.nodes:
        out[n.flavor] += n.accelerators
    return out


@router.get("/orgs/{org}/standing")
def standing(org: str, ctx: Ctx, who: Who) -> list[dict[str, Any]]:
    """Per flavor: the org's quota, what it holds, what it borrows (from whom), what it
    lends (to whom: what reclaim can take back), and what is being reclaimed for it now
    (accelerators still stopping for its jobs, back by the end of their grace periods)."""
    require_org(who, org)
    with ctx.db.read() as s:
        existing_org(s, org)
        shape = pool_shape(s, ctx.pool)
        allocs = jobstore.live_allocations(s)
        held: Counter[tuple[str, str]] = Counter()
        for a in allocs:
            held[(a.org, a.flavor)] += a.accelerators
        capacity = capacity_of(shape)
        reclaiming = _reclaiming(s, org, [a for a in allocs if a.state == "stopping" and a.preempted_for])
        quotas = {q.flavor: q for q in orgstore.quotas(s, org)}
    got = standings(shape.orgs, capacity, held)
    out = []
    for flavor in sorted(capacity):
        st, q = got[(org, flavor)], quotas.get(flavor)
        coming, back_by = reclaiming.get(flavor, (0, None))
        out.append(
            {
                "flavor": flavor, "capacity": capacity[flavor], **quota_out(q or FlavorQuota()),
                "in_use": st.in_use, "borrowed": st.borrowed, "borrowed_from": st.borrowed_from,
                "lent": st.lent, "lent_to": st.lent_to, "reclaiming": coming, "reclaimed_by": back_by,
            }
        )  # fmt: skip
    return out


def _reclaiming(s: Session, org: str, stopping: list[Any]) -> dict[str, tuple[int, float | None]]:
    """Per flavor: accelerators stopping for ``org``'s jobs and when the last is due."""
    if not stopping:
        return {}
    ids = sorted({a.preempted_for for a in stopping} | {a.job_id for a in stopping})
    rows = {j.id: j for j in s.exec(select(JobRow).where(col(JobRow.id).in_(ids))).all()}
    out: dict[str, tuple[int, float | None]] = {}
    for a in stopping:
        beneficiary, victim = rows.get(a.preempted_for), rows.get(a.job_id)
        if beneficiary is None or beneficiary.org != org or victim is None:
            continue
        due = (a.stop_requested_at or 0.0) + jobstore.spec_of(victim).grace_period_seconds
        count, latest = out.get(a.flavor, (0, None))
        out[a.flavor] = (count + a.accelerators, due if latest is None else max(latest, due))
    return out
