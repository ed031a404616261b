"""/v1/agents: node agents register, report (the report is the heartbeat) and fetch
their peer lists; operators mint node-bound agent tokens and read verdicts.

An agent token (``tpa_...``) acts for its one node only: registering or reporting for
another node is refused with 403. A pool-admin token may act for any node (for tools
and tests). Reports carry the registration's session, a growing sequence number and a
timestamp, so a replayed or stale report is refused (409/422).

The health evaluation that turns stored reports into verdicts (``scheduler.health.service``)
runs beside the control loop, started by ``scheduler.control.root``; it only evaluates
while this server holds the leader lease, and a changed verdict wakes the loop.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from scheduler.api.auth import authenticate, bearer, refuse_bad_token, require_pool_admin
from scheduler.api.context import AUTH_TTL, ServerContext, get_ctx
from scheduler.api.errors import ApiError, forbidden, not_found
from scheduler.health.peers import Member, assign_peers, round_of
from scheduler.health.thresholds import Thresholds, load_thresholds
from scheduler.store import agents as agentstore
from scheduler.store import nodes as nodestore
from scheduler.store import orgs as orgstore
from scheduler.store.tokens import Principal
from values.names import Name
from values.reports import AgentReport, Registration

router = APIRouter(prefix="/v1/agents", tags=["agents"])
Ctx = Annotated[ServerContext, Depends(get_ctx)]
Who = Annotated[Principal, Depends(authenticate)]


def _thresholds(app: FastAPI) -> Thresholds:
    th: Thresholds | None = getattr(app.state, "health_thresholds", None)
    if th is None:
        th = app.state.health_thresholds = load_thresholds()
    return th


@dataclass(frozen=True)
class Caller:
    id: str
    node: str | None  # None: a pool-admin, who may act for any node


async def agent_caller(request: Request) -> Caller:
    secret = bearer(request)
    if secret is not None and secret.startswith(agentstore.TOKEN_PREFIX):
        ctx: ServerContext = request.app.state.ctx
        cache = _agent_cache(request.app)
        key = agentstore.hash_secret(secret)
        hit = cache.get(key)
        if hit is not None and hit[1] > time.monotonic():
            caller = hit[0]
        else:
            caller = await run_in_threadpool(_verify_agent, ctx, secret)
            if len(cache) > 10_000:
                cache.clear()
            cache[key] = (caller, time.monotonic() + AUTH_TTL)
        if caller is None:  # counted with bad API tokens
            refuse_bad_token(request, "invalid or revoked agent token")
        return caller
    who = await authenticate(request)
    if not who.is_pool_admin:
        raise forbidden(
            f"agent endpoints need an agent token or the pool-admin role (you are {who.role.value})"
        )
    return Caller(id=who.token_id, node=None)


def _agent_cache(app: FastAPI) -> dict[str, tuple[Caller | None, float]]:
    cache: dict[str, tuple[Caller | None, float]] | None = getattr(app.state, "agent_auth_cache", None)
    if cache is None:
        cache = app.state.agent_auth_cache = {}
    return cache


def _verify_agent(ctx: ServerContext, secret: str) -> Caller | None:
    with ctx.db.read() as s:
        row = agentstore.verify_token(s, secret)
    return None if row is None else Caller(id=row.id, node=row.node)


Agent = Annotated[Caller, Depends(agent_caller)]


def _for_node(caller: Caller, node: str) -> None:
    if caller.node is not None and caller.node != node:
        raise forbidden(f"this agent token acts for node '{caller.node}' only, not '{node}'")


# --- tokens ---------------------------------------------------------------------------


class AgentTokenRequest(BaseModel):
    node: Name
    name: str = Field("", max_length=128)


@router.post("/tokens", status_code=201)
def create_token(req: AgentTokenRequest, ctx: Ctx, who: Who) -> dict[str, Any]:
    """A token that acts for ``node`` only (pool-admin); the secret is shown once."""
    require_pool_admin(who)
    with ctx.db.write() as s:
        row, secret = agentstore.create_token(s, req.node, req.name, ctx.clock(), who.token_id)
        orgstore.audit(s, ctx.clock(), who.token_id, "agent-token.create", row.id, node=req.node)
        return {**_token_out(row), "secret": secret}


@router.get("/tokens")
def list_tokens(ctx: Ctx, who: Who) -> list[dict[str, Any]]:
    require_pool_admin(who)
    with ctx.db.read() as s:
        return [_token_out(t) for t in agentstore.list_tokens(s)]


@router.delete("/tokens/{token_id}")
def revoke_token(token_id: str, ctx: Ctx, who: Who, request: Request) -> dict[str, Any]:
    require_pool_admin(who)
    with ctx.db.write() as s:
        row = s.get(agentstore.AgentTokenRow, token_id)
        if row is None:
            raise not_found("agent token", token_id)
        if row.revoked_at is None:
            row.revoked_at = ctx.clock()
            s.add(row)
            orgstore.audit(s, ctx.clock(), who.token_id, "agent-token.revoke", row.id, node=row.node)
        out = _token_out(row)
    _agent_cache(request.app).clear()  # revoked here at once; other servers within AUTH_TTL
    return out


def _token_out(row: agentstore.AgentTokenRow) -> dict[str, Any]:
    return row.model_dump(exclude={"secret_hash"})


# --- register, report, peers ------------------------------------------------------------


@router.post("/register")
def register(req: Registration, ctx: Ctx, caller: Agent, request: Request) -> dict[str, Any]:
    _for_node(caller, req.node)
    th = _thresholds(request.app)
    now = ctx.clock()
    if abs(req.sent_at - now) > th.max_clock_skew_seconds:
        raise ApiError(422, f"{req.sent_at - now:+.0f}s from the server's clock", "sent_at")
    fields = req.model_dump(exclude={"node", "sent_at"})
    with ctx.db.write() as s:
        node = nodestore.get_node(s, req.node)
        # Topology the agent was not told falls back to what the backend says.
        for key in ("rack", "spine", "zone", "flavor"):
            if fields.get(key) is None and node is not None:
                fields[key] = getattr(node, key)
        row = agentstore.register(s, req.node, fields, now)
        session = row.session
    return {
        "node": req.node,
        "session": session,
        "known_node": node is not None,
        "probe_interval_seconds": th.probe_interval_seconds,
        "report_interval_seconds": th.report_interval_seconds,
        "peers": _peers(ctx, req.node, th, now),
    }


@router.post("/{node}/reports")
def report(node: Name, req: AgentReport, ctx: Ctx, caller: Agent, request: Request) -> dict[str, Any]:
    _for_node(caller, node)
    th = _thresholds(request.app)
    stamp = agentstore.Stamp(session=req.session, seq=req.seq, sent_at=req.sent_at)
    with ctx.db.write() as s:
        try:
            agentstore.accept_report(
                s, node, stamp, req.model_dump_json(), ctx.clock(), th.max_clock_skew_seconds
            )
        except agentstore.ReportRefused as exc:
            raise ApiError(exc.status, exc.message, exc.field) from None
    return {"accepted": req.seq, "round": round_of(ctx.clock(), th.rotate_seconds)}


@router.get("/{node}/peers")
def peers(node: Name, ctx: Ctx, caller: Agent, request: Request) -> dict[str, Any]:
    _for_node(caller, node)
    th = _thresholds(request.app)
    now = ctx.clock()
    return {"round": round_of(now, th.rotate_seconds), "peers": _peers(ctx, node, th, now)}


def _peers(ctx: ServerContext, node: str, th: Thresholds, now: float) -> list[dict[str, Any]]:
    with ctx.db.read() as s:
        agents = {a.node: a for a in agentstore.list_agents(s)}
    members = [Member(a.node, a.rack or "rack-0", a.spine or "") for a in agents.values()]
    names = assign_peers(node, members, th.other_rack_peers, round_of(now, th.rotate_seconds))
    return [
        {"node": n, "address": agents[n].address, "port": agents[n].probe_port, "rack": agents[n].rack}
        for n in names
    ]


# --- reading ---------------------------------------------------------------------------


@router.get("")
def list_agents(ctx: Ctx, _: Who) -> list[dict[str, Any]]:
    now = ctx.clock()
    with ctx.db.read() as s:
        return [
            {
                **a.model_dump(exclude={"report", "session"}),
                "last_report_age_seconds": round(now - a.last_seen_at, 3),
            }
            for a in agentstore.list_agents(s)
        ]


@router.get("/events")
def health_events(
    ctx: Ctx,
    _: Who,
    after: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,  # a database id: 64-bit at most
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[dict[str, Any]]:
    """Health events (node, rack, link state changes) with ids above ``after``, oldest first."""
    with ctx.db.read() as s:
        rows = agentstore.events_after(s, after, limit)
    return [
        {"id": e.id, "at": e.at, "kind": e.kind, "subject": e.subject, "state": e.state, "message": e.message,
         "evidence": json.loads(e.evidence)}
        for e in rows
    ]  # fmt: skip


@router.get("/{node}/health")
def node_health(node: Name, ctx: Ctx, _: Who) -> dict[str, Any]:
    """The model's verdict on the node, its evidence, and recent events about it."""
    now = ctx.clock()
    with ctx.db.read() as s:
        agent = agentstore.get_agent(s, node)
        verdict = agentstore.get_verdict(s, node)
        if agent is None and verdict is None:
            raise not_found("agent of node", node)
        events = agentstore.events_about_node(s, node, agent.rack if agent else None)
    out: dict[str, Any] = {"node": node}
    if agent is not None:
        out["agent"] = {
            "address": agent.address,
            "rack": agent.rack,
            "last_report_age_seconds": round(now - agent.last_seen_at, 3),
            "last_seq": agent.last_seq,
        }
    if verdict is not None:
        out["verdict"] = {
            "state": verdict.state,
            "since": verdict.since,
            "reasons": json.loads(verdict.reasons),
            "evidence": json.loads(verdict.evidence),
        }
    out["events"] = [
        {"at": e.at, "kind": e.kind, "subject": e.subject, "state": e.state, "message": e.message}
        for e in events
    ]
    return out
