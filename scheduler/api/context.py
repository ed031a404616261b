"""What every request handler needs, built once per server."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import Request

from scheduler.api.admission import Admission
from scheduler.checkpoint_folder import DEFAULT_ROOT
from scheduler.control.handle import LoopHandle
from scheduler.metrics import Metrics
from scheduler.store.batch import SubmitBatcher
from scheduler.store.db import Database
from scheduler.store.tokens import Principal
from scheduler.store.view import PoolView
from values.validation import ValidationRule

AUTH_TTL = 5.0


class FailureWindow:
    """Failed authentications per client address in a sliding window: past ``limit``
    within ``window`` seconds the address is refused (429) until old failures age out.
    Bounded in memory: a flood from many addresses forgets the oldest ones."""

    def __init__(self, limit: int = 20, window: float = 60.0, max_clients: int = 10_000) -> None:
        self.limit, self.window, self.max_clients = limit, window, max_clients
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()

    def add(self, client: str, now: float) -> None:
        times = self._seen.pop(client, None) or deque(maxlen=self.limit)
        times.append(now)
        self._seen[client] = times
        while len(self._seen) > self.max_clients:
            self._seen.popitem(last=False)

    def blocked(self, client: str, now: float) -> bool:
        times = self._seen.get(client)
        return times is not None and len(times) >= self.limit and now - times[0] < self.window


@dataclass
class ServerContext:
    db: Database
    pool: PoolView = field(default_factory=PoolView)
    metrics: Metrics = field(default_factory=Metrics)
    clock: Callable[[], float] = time.time
    # The loop's checkpoint root: a reported checkpoint must lie in the job's folder under it.
    checkpoint_root: str = DEFAULT_ROOT
    # Whether an uncordon validates the node first (the loop runs the validation).
    validation: ValidationRule = field(default_factory=ValidationRule)
    # May read /metrics and nothing else (Prometheus' credential); None: pool-admins only.
    metrics_token: str | None = None
    # The control loop as the API sees it: wake it, ask it; it runs elsewhere
    # (scheduler.control.root). None in tests that drive no loop.
    loop: LoopHandle | None = None
    # sha256(secret) -> (principal or None, expiry on the monotonic clock). Saves a
    # database read per request; a revocation reaches other servers within AUTH_TTL.
    auth_cache: dict[str, tuple[Principal | None, float]] = field(default_factory=dict)
    auth_failures: FailureWindow = field(default_factory=FailureWindow)
    # Refuses at submit what the pool can never run (its shape re-read every few seconds).
    admission: Admission = field(default_factory=Admission)
    submits: SubmitBatcher = field(init=False)
    # (org, team) pairs seen to exist; orgs and teams are never deleted, so a hit
    # spares the submit path a database read.
    known_owners: set[tuple[str, str | None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.submits = SubmitBatcher(self.db)

    def wake_loop(self) -> None:
        """After a committed change the next cycle should see soon (a submission, a
        cancel, a cordon, a node's health)."""
        if self.loop is not None:
            self.loop.wake()


async def get_ctx(request: Request) -> ServerContext:
    # Async on purpose: FastAPI runs a sync dependency in a worker thread, and that
    # hand-off costs more than everything this does.
    ctx: ServerContext = request.app.state.ctx
    return ctx
