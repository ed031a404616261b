"""/v1 nodes, orgs, teams, quotas, tokens, usage: thin handlers over the store."""

from __future__ import annotations

import json
from collections import Counter
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from sqlmodel import Session

from scheduler.api.auth import authenticate, forget_tokens, require_org, require_pool_admin, visible_orgs
from scheduler.api.context import ServerContext, get_ctx
from scheduler.api.errors import ApiError, forbidden, not_found
from scheduler.api.routes_quota import existing_org, quota_out
from scheduler.api.schemas import (
    HealthReport,
    NewToken,
    Node,
    OrgRequest,
    RevokedToken,
    TeamRequest,
    Token,
    TokenRequest,
)
from scheduler.store import goodput as goodputstore
from scheduler.store import jobs as jobstore
from scheduler.store import nodes as nodestore
from scheduler.store import orgs as orgstore
from scheduler.store import tokens as tokenstore
from scheduler.store import usage as usagestore
from scheduler.store.tables import TokenRow
from scheduler.store.tokens import Principal, Role
from values.names import Name

router = APIRouter(prefix="/v1", tags=["pool"])
Ctx = Annotated[ServerContext, Depends(get_ctx)]
Who = Annotated[Principal, Depends(authenticate)]


@router.get("/whoami")
def whoami(ctx: Ctx, who: Who) -> dict[str, Any]:
    """The token the request came with: its role, org, name and lifetime."""
    with ctx.db.read() as s:
        row = s.get(TokenRow, who.token_id)
    return {
        "token_id": who.token_id, "role": who.role.value, "org": who.org,
        "name": row.name if row is not None else "",
        "created_at": row.created_at if row is not None else None,
        "expires_at": row.expires_at if row is not None else None,
    }  # fmt: skip


# --- nodes ---------------------------------------------------------------------------


def _allocated(s: Session) -> Counter[str]:
    used: Counter[str] = Counter()
    for a in jobstore.live_allocations(s):
        per_replica = a.accelerators // max(1, sum(k for _, k in json.loads(a.assignments)))
        for node, k in json.loads(a.assignments):
            used[node] += per_replica * k
    return used


@router.get("/nodes", response_model=list[Node])
def list_nodes(ctx: Ctx, _: Who, flavor: Annotated[str | None, Query(max_length=63)] = None) -> list[Node]:
    with ctx.db.read() as s:
        used = _allocated(s)
        return [Node.of(r, used[r.name]) for r in nodestore.list_nodes(s, flavor)]


@router.get("/nodes/{name}", response_model=Node)
def get_node(name: str, ctx: Ctx, _: Who) -> Node:
    with ctx.db.read() as s:
        row = nodestore.get_node(s, name)
        if row is None:
            raise not_found("node", name)
        return Node.of(row, _allocated(s)[name])


def _cordon(name: str, ctx: ServerContext, who: Principal, cordoned: bool, validate: bool = False) -> Node:
    require_pool_admin(who)
    now = ctx.clock()
    with ctx.db.write() as s:
        row = nodestore.get_node(s, name)
        if row is None:
            raise not_found("node", name)
        if validate:  # stays cordoned until the loop's validation run passes
            why = "asked by an operator" if cordoned else "uncordoned"
            nodestore.request_validation(s, row, why, now)
            orgstore.audit(s, now, who.token_id, "node.validate", name)
        else:
            nodestore.set_cordon(s, row, cordoned, now)
            if not cordoned and row.validation in ("pending", "running", "failed"):
                row.validation, row.validation_message = None, "uncordoned without validation"
            orgstore.audit(s, now, who.token_id, "node.cordon" if cordoned else "node.uncordon", name)
        out = Node.of(row)
    ctx.wake_loop()
    return out


@router.post("/nodes/{name}/cordon", response_model=Node)
def cordon(name: str, ctx: Ctx, who: Who) -> Node:
    return _cordon(name, ctx, who, True)


@router.post("/nodes/{name}/uncordon", response_model=Node)
def uncordon(name: str, ctx: Ctx, who: Who, validate: Annotated[bool | None, Query()] = None) -> Node:
    """With the pool's ``validation.on_uncordon`` (or ``validate=true``) the node runs a
    validation first and takes work once it passes; ``validate=false`` hands it over now."""
    require_pool_admin(who)
    rule = ctx.validation
    wanted = rule.enabled and rule.on_uncordon if validate is None else validate
    if wanted and not rule.enabled:
        raise ApiError(409, "validation is not enabled in this pool (the pool file's validation.enabled)",
                       "validate")  # fmt: skip
    return _cordon(name, ctx, who, False, validate=wanted)


@router.post("/nodes/{name}/validate", response_model=Node)
def validate(name: str, ctx: Ctx, who: Who) -> Node:
    """Cordon the node and run a validation; it takes work again once it passes."""
    require_pool_admin(who)
    if not ctx.validation.enabled:
        raise ApiError(409, "validation is not enabled in this pool (the pool file's validation.enabled)")
    return _cordon(name, ctx, who, True, validate=True)


@router.put("/nodes/{name}/health", response_model=Node)
def report_health(name: str, req: HealthReport, ctx: Ctx, who: Who) -> Node:
    """What a node's agent found (pool-admin tokens; agents run with one)."""
    require_pool_admin(who)
    with ctx.db.write() as s:
        row = nodestore.get_node(s, name)
        if row is None:
            raise not_found("node", name)
        changed = row.reported_health != req.health.value
        if changed:
            orgstore.audit(
                s, ctx.clock(), who.token_id, "node.health", name, health=req.health.value, reason=req.reason
            )
        nodestore.report_health(s, row, req.health, req.reason, ctx.clock())
        out = Node.of(row)
    if changed:
        ctx.wake_loop()
    return out


# --- orgs, teams, quotas ---------------------------------------------------------------


def _org_out(s: Session, name: str, weight: float) -> dict[str, Any]:
    return {
        "name": name,
        "weight": weight,
        "quotas": {q.flavor: quota_out(q) for q in orgstore.quotas(s, name)},
        "teams": [{"name": t.name, "weight": t.weight} for t in orgstore.teams(s, name)],
    }


@router.get("/orgs")
def list_orgs(ctx: Ctx, who: Who) -> list[dict[str, Any]]:
    with ctx.db.read() as s:
        return [_org_out(s, o.name, o.weight) for o in orgstore.list_orgs(s, visible_orgs(who))]


@router.post("/orgs", status_code=201)
def create_org(req: OrgRequest, ctx: Ctx, who: Who) -> dict[str, Any]:
    require_pool_admin(who)
    with ctx.db.write() as s:
        if orgstore.get_org(s, req.name) is not None:
            raise ApiError(409, f"org '{req.name}' already exists", "name")
        orgstore.ensure_org(s, req.name, ctx.clock(), req.weight)
        orgstore.audit(s, ctx.clock(), who.token_id, "org.create", req.name, weight=req.weight)
        return _org_out(s, req.name, req.weight)


@router.get("/orgs/{org}")
def get_org(org: str, ctx: Ctx, who: Who) -> dict[str, Any]:
    require_org(who, org)
    with ctx.db.read() as s:
        row = orgstore.get_org(s, org)
        if row is None:
            raise not_found("org", org)
        return _org_out(s, row.name, row.weight)


@router.put("/orgs/{org}/teams/{team}")
def set_team(org: str, team: Name, req: TeamRequest, ctx: Ctx, who: Who) -> dict[str, Any]:
    require_org(who, org, admin=True)
    with ctx.db.write() as s:
        existing_org(s, org)
        row = orgstore.set_team(s, org, team, req.weight, ctx.clock(), who.token_id)
        return {"org": org, "name": row.name, "weight": row.weight}


@router.get("/orgs/{org}/teams")
def list_teams(org: str, ctx: Ctx, who: Who) -> list[dict[str, Any]]:
    require_org(who, org)
    with ctx.db.read() as s:
        existing_org(s, org)
        return [{"org": t.org, "name": t.name, "weight": t.weight} for t in orgstore.teams(s, org)]


# --- tokens ------------------------------------------------------------------------


@router.post("/tokens", status_code=201, response_model=NewToken)
def create_token(req: TokenRequest, ctx: Ctx, who: Who) -> NewToken:
    if req.role is Role.POOL_ADMIN:
        require_pool_admin(who)
        if req.org is not None:
            raise ApiError(422, "a pool-admin token belongs to no org; leave org out", "org")
    else:
        if req.org is None:
            raise ApiError(422, f"a {req.role.value} token needs an org", "org")
        require_org(who, req.org, admin=True)
    with ctx.db.write() as s:
        if req.org is not None:
            existing_org(s, req.org)
        now = ctx.clock()
        expires = _expiry_within_makers(s, req, who, now)
        row, secret = tokenstore.create(s, req.role, req.org, req.name, now, who.token_id, expires_at=expires)
        return NewToken(**Token.of(row).model_dump(), secret=secret)


def _expiry_within_makers(s: Session, req: TokenRequest, who: Principal, now: float) -> float:
    """A token lives no longer than the token that makes it: a short-lived admin token
    cannot mint a long-lived one. Read fresh, not from the auth cache: a maker revoked
    on another server a moment ago mints nothing more."""
    maker = s.get(TokenRow, who.token_id)
    if maker is None or not tokenstore.usable(maker, now):
        raise ApiError(401, "invalid, expired or revoked token", "authorization")
    wanted = now + req.ttl_seconds
    if maker.expires_at is None or wanted <= maker.expires_at:
        return wanted
    if "ttl_seconds" in req.model_fields_set:
        left = maker.expires_at - now
        raise ApiError(
            422, f"must not outlive the token that makes it, which expires in {left:.0f} s", "ttl_seconds"
        )
    return maker.expires_at  # the default lifetime, cut to the maker's


@router.get("/tokens", response_model=list[Token])
def list_tokens(ctx: Ctx, who: Who) -> list[Token]:
    if not who.is_pool_admin:
        require_org(who, who.org or "", admin=True)
    with ctx.db.read() as s:
        return [Token.of(t) for t in tokenstore.list_tokens(s, None if who.is_pool_admin else who.org)]


@router.delete("/tokens/{token_id}", response_model=RevokedToken)
def revoke_token(token_id: str, ctx: Ctx, who: Who) -> RevokedToken:
    """Revoke a token; the tokens an org-admin token made go with it (``also_revoked``)."""
    with ctx.db.write() as s:
        row = s.get(TokenRow, token_id)
        if row is None or not (who.is_pool_admin or (row.org is not None and row.org == who.org)):
            raise not_found("token", token_id)
        if not who.is_pool_admin:
            require_org(who, row.org or "", admin=True)
        also = tokenstore.revoke(s, row, ctx.clock(), who.token_id) if row.revoked_at is None else []
        out = RevokedToken(**Token.of(row).model_dump(), also_revoked=[t.id for t in also])
    forget_tokens(ctx)
    return out


# --- usage ---------------------------------------------------------------------------


@router.get("/usage")
def usage(
    ctx: Ctx,
    who: Who,
    since: Annotated[float | None, Query(ge=0)] = None,
    until: Annotated[float | None, Query(ge=0)] = None,
    by: Literal["org", "team", "flavor", "user"] = "org",
    org: Annotated[str | None, Query(max_length=63)] = None,
) -> list[dict[str, object]]:
    """Accelerator-hours; org-admins see their own org, pool-admins every org."""
    if who.role is Role.MEMBER:
        raise forbidden("usage is for org-admins and pool-admins (you are member)")
    orgs = visible_orgs(who)
    if org is not None:
        require_org(who, org, admin=True)
        orgs = [org]
    now = ctx.clock()
    start = since if since is not None else now - 30 * 86_400
    end = until if until is not None else now + 1
    if end <= start:
        raise ApiError(422, "must be after 'since'", "until")
    with ctx.db.read() as s:
        if by == "user":
            return usagestore.by_user(s, since=start, until=end, now=now, orgs=orgs)
        rows = usagestore.report(s, since=start, until=end, by=by, orgs=orgs)
        if by == "org":  # and how much of it went into work that was kept
            spent = goodputstore.by_org(s, [str(r["org"]) for r in rows], start, end, now)
            rows = [{**r, **spent[str(r["org"])].as_dict()} for r in rows]
        return rows


@router.get("/audit")
def audit(
    ctx: Ctx,
    who: Who,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
    since: Annotated[float | None, Query(ge=0)] = None,
    action: Annotated[str | None, Query(max_length=64, description="An action, or a family: quota.")] = None,
    actor: Annotated[str | None, Query(max_length=32, description="A token id.")] = None,
) -> list[dict[str, Any]]:
    """Changes and denials, newest first (pool-admin)."""
    require_pool_admin(who)
    with ctx.db.read() as s:
        return [
            {**a.model_dump(exclude={"detail"}), "detail": json.loads(a.detail)}
            for a in orgstore.audit_log(s, limit, since=since, action=action, actor=actor)
        ]
