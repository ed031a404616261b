"""/v1/snapshot: the pool as the control loop sees it, for `trainpool sim --from-live`.

Org-admins and pool-admins only (members see their own jobs elsewhere). What leaves is
stripped of every job's command, environment and image, and an org-admin sees the other
orgs under pseudonyms (``values/snapshot_file.py``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from scheduler.api.auth import authenticate
from scheduler.api.context import ServerContext, get_ctx
from scheduler.api.errors import forbidden
from scheduler.store import view as viewstore
from scheduler.store.tokens import Principal, Role
from values.snapshot_file import SnapshotFile, as_seen_by, without_secrets

router = APIRouter(prefix="/v1", tags=["pool"])
Ctx = Annotated[ServerContext, Depends(get_ctx)]
Who = Annotated[Principal, Depends(authenticate)]


@router.get("/snapshot")
def snapshot(ctx: Ctx, who: Who) -> dict[str, Any]:
    if who.role is Role.MEMBER:
        raise forbidden("the pool's snapshot is for org-admins and pool-admins (you are member)")
    now = ctx.clock()
    with ctx.db.read() as s:
        snap = without_secrets(viewstore.build(s, ctx.pool, now).snapshot)
    if not who.is_pool_admin and who.org is not None:
        snap, scope = as_seen_by(snap, who.org), f"org:{who.org}"
    else:
        scope = "pool"
    return SnapshotFile(taken_at=now, scope=scope, snapshot=snap).model_dump(mode="json")
