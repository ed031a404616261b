"""Who may call each /v1/agents endpoint: API roles, and agent tokens bound to a node.

An agent token acts for its own node only and is not an API token; a pool-admin may act
for any node. A new /v1/agents endpoint without a row fails ``test_every_agent_endpoint_has_a_row``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from service.api_harness import Api, make_api  # tests/ is on sys.path (rootdir conftest)

from scheduler.api.context import FailureWindow

READERS = frozenset({"member", "org-admin", "pool-admin"})
ADMIN = frozenset({"pool-admin"})
FOR_NODE = frozenset({"pool-admin", "agent-own"})  # acting for node h100-00
CALLERS = {
    "member": "member@a",
    "org-admin": "org-admin@a",
    "pool-admin": "pool-admin",
    "agent-own": "agent@h100-00",
    "agent-other": "agent@h100-01",
}


@dataclass(frozen=True)
class Row:
    method: str
    path: str
    allowed: frozenset[str]
    body: Callable[[Api], Any] | None = None


def _registration(api: Api) -> dict[str, Any]:
    return {"node": "h100-00", "address": "10.0.0.1", "probe_port": 8643, "sent_at": api.clock()}


def _report(api: Api) -> dict[str, Any]:
    session = api.call("pool-admin", "POST", "/v1/agents/register", _registration(api)).json()["session"]
    return {"session": session, "seq": 1, "sent_at": api.clock(), "interval": 1}


TABLE = [
    Row("GET", "/v1/agents", READERS),
    Row("GET", "/v1/agents/events", READERS),
    Row("GET", "/v1/agents/{node}/health", READERS),
    Row("POST", "/v1/agents/tokens", ADMIN, lambda api: {"node": "h100-03"}),
    Row("GET", "/v1/agents/tokens", ADMIN),
    Row("DELETE", "/v1/agents/tokens/{agent_token}", ADMIN),
    Row("POST", "/v1/agents/register", FOR_NODE, _registration),
    Row("POST", "/v1/agents/{node}/reports", FOR_NODE, _report),
    Row("GET", "/v1/agents/{node}/peers", FOR_NODE),
]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    path: Path = tmp_path_factory.mktemp("agent-authz") / "pool.db"
    made = make_api(f"sqlite:///{path}")
    made.cycle()
    for node in ("h100-00", "h100-01"):
        made.tokens[f"agent@{node}"] = made.call(
            "pool-admin", "POST", "/v1/agents/tokens", {"node": node}
        ).json()["secret"]
    made.call("pool-admin", "POST", "/v1/agents/register", _registration(made))
    yield made


def _fill(api: Api, row: Row) -> str:
    values = {"node": "h100-00"}
    if "{agent_token}" in row.path:
        values["agent_token"] = api.call(
            "pool-admin", "POST", "/v1/agents/tokens", {"node": "h100-02"}
        ).json()["id"]
    return row.path.format(**values)


@pytest.mark.parametrize(
    ("row", "role"),
    [(r, role) for r in TABLE for role in [*sorted(CALLERS), "nobody"]],
    ids=lambda v: f"{v.method} {v.path}" if isinstance(v, Row) else str(v),
)
def test_the_matrix(api: Api, row: Row, role: str) -> None:
    api.ctx.auth_failures = FailureWindow()  # the refusals here are on purpose: no 429s for them
    path = _fill(api, row)
    body = row.body(api) if row.body else None
    resp = api.call(CALLERS.get(role), row.method, path, body)
    if role in row.allowed:
        assert resp.status_code < 300, f"{role}: {resp.status_code} {resp.text}"
    else:
        assert resp.status_code in (401, 403), f"{role}: {resp.status_code} {resp.text}"


def test_every_agent_endpoint_has_a_row(api: Api) -> None:
    paths = api.client.get("/openapi.json").json()["paths"]
    served = {(m.upper(), _shape(p)) for p, ops in paths.items() if p.startswith("/v1/agents") for m in ops}
    assert served == {(r.method, _shape(r.path)) for r in TABLE}


def _shape(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)
