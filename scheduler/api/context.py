"""What every request handler needs, built once per server."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import Request

from scheduler.loop import ControlLoop
from scheduler.metrics import Metrics
from scheduler.store.batch import SubmitBatcher
from scheduler.store.db import Database
from scheduler.store.tokens import Principal
from scheduler.store.view import PoolView

AUTH_TTL = 5.0


@dataclass
class ServerContext:
    db: Database
    pool: PoolView = field(default_factory=PoolView)
    metrics: Metrics = field(default_factory=Metrics)
    clock: Callable[[], float] = time.time
    loop: ControlLoop | None = None
    # sha256(secret) -> (principal or None, expiry on the monotonic clock). Saves a
    # database read per request; a revocation reaches other servers within AUTH_TTL.
    auth_cache: dict[str, tuple[Principal | None, float]] = field(default_factory=dict)
    submits: SubmitBatcher = field(init=False)
    # (org, team) pairs seen to exist; orgs and teams are never deleted, so a hit
    # spares the submit path a database read.
    known_owners: set[tuple[str, str | None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.submits = SubmitBatcher(self.db)


async def get_ctx(request: Request) -> ServerContext:
    # Async on purpose: FastAPI runs a sync dependency in a worker thread, and that
    # hand-off costs more than everything this does.
    ctx: ServerContext = request.app.state.ctx
    return ctx
