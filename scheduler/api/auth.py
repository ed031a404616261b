"""Who is calling, and may they? Bearer tokens checked against their sha256 in the store.

Rules (DESIGN.md "Interfaces"): ``member`` sees and acts on its own org's jobs;
``org-admin`` also manages its own org's team split, tokens and usage; ``pool-admin``
does everything. Another org's jobs are answered with 404, not 403, so their ids do
not leak.
"""

from __future__ import annotations

import hmac
import time
from typing import NoReturn

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from scheduler.api.context import AUTH_TTL, ServerContext
from scheduler.api.errors import ApiError, forbidden
from scheduler.store import tokens as tokenstore
from scheduler.store.tokens import Principal, Role


def bearer(request: Request) -> str | None:
    """The secret of ``Authorization: Bearer <secret>``, or None."""
    scheme, _, secret = request.headers.get("authorization", "").partition(" ")
    secret = secret.strip()
    return secret if scheme.lower() == "bearer" and secret else None


def refuse_bad_token(request: Request, message: str) -> NoReturn:
    """Count a failed authentication against its address: 429 past the limit, else 401.
    Called only for bad tokens, so a valid token is served whatever its address did and
    an attacker behind the same NAT or proxy cannot lock its neighbours out."""
    ctx = request.app.state.ctx
    # The peer address as uvicorn saw it: a forwarded header counts only from the
    # proxies the server was told to trust (--trusted-proxy).
    client = request.client.host if request.client is not None else "unknown"
    now = time.monotonic()
    blocked = ctx.auth_failures.blocked(client, now)
    ctx.auth_failures.add(client, now)
    if blocked:
        raise ApiError(
            429, "too many requests with bad tokens from this address; wait a minute", "authorization"
        )
    raise ApiError(401, message, "authorization")


async def authenticate(request: Request) -> Principal:
    """Async so that a cache hit costs no thread hand-off; a miss reads in a thread."""
    ctx = request.app.state.ctx
    secret = bearer(request)
    if secret is None:
        refuse_bad_token(request, "missing bearer token (Authorization: Bearer <token>)")
    hit = ctx.auth_cache.get(tokenstore.hash_secret(secret))
    if hit is not None and hit[1] > time.monotonic():
        who = hit[0]
    else:
        who = await run_in_threadpool(_verify, ctx, secret)
    if who is None:
        refuse_bad_token(request, "invalid, expired or revoked token")
    request.state.principal = who
    return who


async def authorize_scrape(request: Request) -> None:
    """/metrics shows every org's queue, quota and wait figures: the metrics token, or a
    pool-admin token (an operator's curl)."""
    ctx: ServerContext = request.app.state.ctx
    secret, token = bearer(request), ctx.metrics_token
    if token and secret and hmac.compare_digest(secret.encode(), token.encode()):
        return
    require_pool_admin(await authenticate(request))


def _verify(ctx: ServerContext, secret: str) -> Principal | None:
    key = tokenstore.hash_secret(secret)
    now = time.monotonic()
    hit = ctx.auth_cache.get(key)
    if hit is not None and hit[1] > now:
        return hit[0]
    wall = ctx.clock()
    with ctx.db.read() as s:
        found = tokenstore.verify(s, secret, wall)
    who, expires_at = found if found is not None else (None, None)
    if len(ctx.auth_cache) > 10_000:  # bounded: a flood of bad tokens cannot grow it forever
        ctx.auth_cache.clear()
    # Remembered for AUTH_TTL, but never past the token's own expiry.
    ttl = AUTH_TTL if expires_at is None else max(0.0, min(AUTH_TTL, expires_at - wall))
    ctx.auth_cache[key] = (who, now + ttl)
    return who


def forget_tokens(ctx: ServerContext) -> None:
    """After a revocation on this server: effective at once here."""
    ctx.auth_cache.clear()


def can_see_org(who: Principal, org: str) -> bool:
    return who.is_pool_admin or who.org == org


def require_org(who: Principal, org: str, *, admin: bool = False) -> None:
    """Member (or, with ``admin``, org-admin) of ``org``, or pool-admin."""
    if who.is_pool_admin:
        return
    if who.org != org:
        raise forbidden(f"your token belongs to org '{who.org}', not '{org}'")
    if admin and who.role is not Role.ORG_ADMIN:
        raise forbidden(f"needs the org-admin role of '{org}' (you are {who.role.value})")


def require_pool_admin(who: Principal) -> None:
    if not who.is_pool_admin:
        raise forbidden(f"needs the pool-admin role (you are {who.role.value})")


def visible_orgs(who: Principal) -> list[str] | None:
    """None: every org."""
    return None if who.is_pool_admin else [who.org or ""]
