"""An API server in a test: TestClient over the app, the loop driven by hand."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi.testclient import TestClient

from scheduler.api.app import create_app
from scheduler.api.context import ServerContext
from scheduler.backends.sim import SimBackend
from scheduler.checkpoint_folder import DEFAULT_ROOT
from scheduler.control.loop import ControlLoop, LoopSettings
from scheduler.control.loop_host import LoopHost
from scheduler.control.outcome import ApplyOptions
from scheduler.control.wake import Wake
from scheduler.metrics import Metrics
from scheduler.store import orgs as orgstore
from scheduler.store import tokens as tokenstore
from scheduler.store.db import open_database
from scheduler.store.tokens import Role
from scheduler.store.view import PoolView
from values.domain import Flavor
from values.progress import ProgressRule
from values.validation import ValidationRule

from .harness import Clock, nodes, orgs


@dataclass
class Api:
    client: TestClient
    ctx: ServerContext
    clock: Clock
    host: LoopHost  # the loop the app asks, in this process, cycled by hand
    tokens: dict[str, str] = field(default_factory=dict)  # "member@a" -> secret

    def as_(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def call(self, who: str | None, method: str, path: str, body: Any = None, **params: Any) -> Any:
        headers = self.as_(who) if who else {}
        return self.client.request(method, path, json=body, headers=headers, params=params or None)

    def submit(self, who: str, org: str = "a", **spec: Any) -> dict[str, Any]:
        body = {"spec": {"name": "train", "org": org, "gang": {"flavor": "h100"}, **spec}}
        resp = self.call(who, "POST", "/v1/jobs", body)
        assert resp.status_code == 201, resp.text
        return dict(resp.json())

    def cycle(self, advance: float = 0.0) -> None:
        self.clock.t += advance
        self.host.loop.cycle()


def make_api(
    url: str,
    checkpoint_root: str = DEFAULT_ROOT,
    validation: ValidationRule | None = None,
    progress: ProgressRule | None = None,
) -> Api:
    clock = Clock()
    db = open_database(url)
    pool = PoolView(flavors=(Flavor(name="h100"),))
    backend = SimBackend(nodes(4), default_duration=100.0)
    metrics = Metrics()
    loop = ControlLoop(
        db, backend, pool, clock=clock, metrics=metrics,
        settings=LoopSettings(holder="api-test", apply=ApplyOptions(
            checkpoint_root=checkpoint_root, validation=validation or ValidationRule(),
            progress=progress or ProgressRule())),
    )  # fmt: skip
    host = LoopHost(loop, Wake())
    ctx = ServerContext(
        db=db,
        pool=pool,
        clock=clock,
        loop=host,
        metrics=metrics,
        checkpoint_root=checkpoint_root,
        validation=validation or ValidationRule(),
    )
    api = Api(TestClient(create_app(ctx), raise_server_exceptions=False), ctx, clock, host)
    with db.write() as s:
        orgstore.seed_from_config(s, orgs(a=16, b=16), clock())
        _, api.tokens["pool-admin"] = tokenstore.create(s, Role.POOL_ADMIN, None, "admin", clock(), None)
        for org in ("a", "b"):
            for role in (Role.MEMBER, Role.ORG_ADMIN):
                _, api.tokens[f"{role.value}@{org}"] = tokenstore.create(s, role, org, "t", clock(), None)
    return api
