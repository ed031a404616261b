"""The authorization matrix: every /v1 endpoint x role x own/other org, from one table.

A new endpoint without a row fails ``test_every_endpoint_has_a_row``, so nobody adds
an endpoint without deciding who may call it.
"""

from __future__ import annotations

import itertools
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from scheduler.checkpoint_folder import job_folder
from values.validation import ValidationRule

from .api_harness import Api, make_api

ALL = frozenset({"member", "org-admin", "pool-admin"})
ADMINS = frozenset({"org-admin", "pool-admin"})
POOL = frozenset({"pool-admin"})

Body = Callable[[str], Any] | None


def _spec(org: str) -> dict[str, Any]:
    return {"spec": {"name": "authz", "org": org, "gang": {"flavor": "h100"}}}


@dataclass(frozen=True)
class Row:
    method: str
    path: str  # placeholders: {org} {job} {token} {node} {flavor} {team}
    own: frozenset[str]  # roles of org "a" allowed on org "a"'s resources
    other: frozenset[str]  # ... on org "b"'s resources
    body: Body = None
    params: Callable[[str], dict[str, Any]] | None = None
    launched: bool = False  # the job must have run (logs exist only then)


TABLE = [
    Row("GET", "/v1/whoami", ALL, ALL),
    Row("POST", "/v1/jobs", ALL, POOL, body=_spec),
    Row("GET", "/v1/jobs", ALL, POOL, params=lambda org: {"org": org}),
    Row("GET", "/v1/jobs/{job}", ALL, POOL),
    Row("POST", "/v1/jobs/{job}/cancel", ALL, POOL),
    Row("GET", "/v1/jobs/{job}/events", ALL, POOL),
    Row("GET", "/v1/jobs/{job}/logs", ALL, POOL, params=lambda org: {"attempt": 0}, launched=True),
    Row("POST", "/v1/jobs/{job}/checkpoints", ALL, POOL, body=lambda org: {"path": "{folder}/1", "step": 1}),
    Row("GET", "/v1/jobs/{job}/checkpoints", ALL, POOL),
    Row("GET", "/v1/queue", ALL, POOL, params=lambda org: {"org": org}),
    Row("GET", "/v1/nodes", ALL, ALL),
    Row("GET", "/v1/nodes/{node}", ALL, ALL),
    Row("POST", "/v1/nodes/{node}/cordon", POOL, POOL),
    Row("POST", "/v1/nodes/{node}/uncordon", POOL, POOL),
    Row("POST", "/v1/nodes/{node}/validate", POOL, POOL),
    Row("PUT", "/v1/nodes/{node}/health", POOL, POOL, body=lambda org: {"health": "healthy"}),
    Row("GET", "/v1/orgs", ALL, ALL),
    Row("POST", "/v1/orgs", POOL, POOL, body=lambda org: {"name": f"new-{secrets.token_hex(3)}"}),
    Row("GET", "/v1/orgs/{org}", ALL, POOL),
    Row("GET", "/v1/orgs/{org}/quotas", ALL, POOL),
    Row("GET", "/v1/orgs/{org}/standing", ALL, POOL),
    Row("PUT", "/v1/orgs/{org}/quotas/{flavor}", POOL, POOL, body=lambda org: {"nominal": 16}),
    Row("PATCH", "/v1/orgs/{org}/quotas/{flavor}", POOL, POOL, body=lambda org: {"nominal": 16}),
    Row("GET", "/v1/orgs/{org}/teams", ALL, POOL),
    Row("PUT", "/v1/orgs/{org}/teams/{team}", ADMINS, POOL, body=lambda org: {"weight": 2.0}),
    Row("POST", "/v1/tokens", ADMINS, POOL, body=lambda org: {"role": "member", "org": org, "name": "x"}),
    Row("GET", "/v1/tokens", ADMINS, ADMINS),
    Row("DELETE", "/v1/tokens/{token}", ADMINS, POOL),
    Row("GET", "/v1/usage", ADMINS, POOL, params=lambda org: {"org": org}),
    Row("GET", "/v1/audit", POOL, POOL),
    Row("GET", "/v1/snapshot", ADMINS, ADMINS),
    Row("GET", "/metrics", POOL, POOL),  # every org's figures (and the scrape token)
]

CALLERS = {"member": "member@a", "org-admin": "org-admin@a", "pool-admin": "pool-admin"}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    path: Path = tmp_path_factory.mktemp("authz") / "pool.db"
    made = make_api(f"sqlite:///{path}", validation=ValidationRule(enabled=True))  # /validate is served
    with made.client:
        made.cycle()  # the loop learns the nodes
        yield made


def _fill(api: Api, row: Row, org: str) -> dict[str, str]:
    values = {"org": org, "flavor": "h100", "team": "research", "node": "h100-00"}
    if "{job}" in row.path:
        values["job"] = api.submit("pool-admin", org=org)["id"]
        values["folder"] = job_folder(api.ctx.checkpoint_root, values["job"])
        if row.launched:
            api.cycle(1)
    if "{token}" in row.path:
        made = api.call("pool-admin", "POST", "/v1/tokens", {"role": "member", "org": org, "name": "victim"})
        values["token"] = made.json()["id"]
    return values


def _filled(body: Any, values: dict[str, str]) -> Any:
    return {k: v.format(**values) if isinstance(v, str) else v for k, v in body.items()}


@pytest.mark.parametrize(
    ("row", "role", "target"),
    list(itertools.product(TABLE, sorted(CALLERS), ["own", "other"])),
    ids=lambda v: f"{v.method} {v.path}" if isinstance(v, Row) else str(v),
)
def test_the_matrix(api: Api, row: Row, role: str, target: str) -> None:
    org = "a" if target == "own" else "b"
    values = _fill(api, row, org)
    path = row.path.format(**values)
    body = _filled(row.body(org), values) if row.body else None
    params = row.params(org) if row.params else {}
    resp = api.call(CALLERS[role], row.method, path, body, **params)
    allowed = role in (row.own if target == "own" else row.other)
    if allowed:
        assert resp.status_code < 300, f"{role} on {target} org: {resp.status_code} {resp.text}"
    else:
        assert resp.status_code in (403, 404), f"{role} on {target} org: {resp.status_code} {resp.text}"


def test_every_endpoint_has_a_row(api: Api) -> None:
    # The published OpenAPI document is the list of endpoints clients can call.
    paths = api.client.get("/openapi.json").json()["paths"]
    served = {(m.upper(), _shape(p)) for p, ops in paths.items() if p.startswith("/v1") for m in ops}
    served.add(("GET", "/metrics"))  # the one ops endpoint behind a token
    served -= {s for s in served if s[1].startswith("/v1/agents")}  # tests/agents/test_agent_authz.py
    assert served == {(r.method, _shape(r.path)) for r in TABLE}


def _shape(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


def test_nobody_sees_another_orgs_jobs_in_lists(api: Api) -> None:
    theirs = api.submit("member@b", org="b")
    for who in ("member@a", "org-admin@a"):
        assert theirs["id"] not in {j["id"] for j in api.call(who, "GET", "/v1/jobs").json()}
        assert theirs["id"] not in {j["id"] for j in api.call(who, "GET", "/v1/queue").json()}
    assert api.call("member@a", "POST", f"/v1/jobs/{theirs['id']}/cancel").status_code == 404
    assert api.call("member@b", "GET", f"/v1/jobs/{theirs['id']}").json()["state"] == "PENDING"
