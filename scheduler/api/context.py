"""What every request handler needs, built once per server."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import Request

from scheduler.loop import ControlLoop
from scheduler.metrics import Metrics
from scheduler.store.db import Database
from scheduler.store.view import PoolView


@dataclass
class ServerContext:
    db: Database
    pool: PoolView = field(default_factory=PoolView)
    metrics: Metrics = field(default_factory=Metrics)
    clock: Callable[[], float] = time.time
    loop: ControlLoop | None = None


def get_ctx(request: Request) -> ServerContext:
    ctx: ServerContext = request.app.state.ctx
    return ctx
