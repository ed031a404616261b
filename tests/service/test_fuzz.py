"""Whatever a client sends, the API answers 2xx or 4xx with a message, never 500."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .api_harness import Api, make_api

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=20))
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
# Mostly well-formed specs with one field gone wrong, plus arbitrary JSON.
spec_like = st.fixed_dictionaries(
    {"name": st.sampled_from(["ok", "Bad Name", "", "x" * 80]), "org": st.sampled_from(["a", "b", "zz", 3])},
    optional={
        "gang": st.one_of(
            json_values,
            st.fixed_dictionaries(
                {"flavor": st.sampled_from(["h100", "tpu", ""])},
                optional={"replicas": scalars, "accelerators": scalars, "cpu": scalars, "memory_gb": scalars},
            ),
        ),
        "priority": scalars,
        "env": json_values,
        "max_runtime_seconds": scalars,
        "restart": json_values,
    },
)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    made = make_api(f"sqlite:///{Path(tmp_path_factory.mktemp('fuzz')) / 'pool.db'}")
    with made.client:
        yield made


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.one_of(
        json_values, st.fixed_dictionaries({"spec": spec_like}), st.fixed_dictionaries({"spec": json_values})
    )
)
def test_submit_never_crashes(api: Api, body: object) -> None:
    resp = api.client.post(
        "/v1/jobs",
        content=json.dumps(body, allow_nan=True),
        headers={**api.as_("member@a"), "content-type": "application/json"},
    )
    assert resp.status_code in (200, 201, 403, 422), resp.text
    if resp.status_code >= 400:
        assert resp.json()["detail"]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from(["/v1/jobs", "/v1/queue", "/v1/usage", "/v1/nodes", "/v1/jobs/j-1/events"]),
    params=st.dictionaries(
        st.sampled_from(["limit", "offset", "state", "org", "by", "since", "until", "flavor"]),
        st.text(max_size=12),
        max_size=3,
    ),
)
def test_queries_never_crash(api: Api, path: str, params: dict[str, str]) -> None:
    resp = api.call("org-admin@a", "GET", path, **params)
    assert resp.status_code < 500, resp.text


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    target=st.sampled_from(["/v1/orgs/a/quotas/h100", "/v1/orgs/a/teams/t1", "/v1/tokens", "/v1/orgs"]),
    body=st.one_of(
        json_values,
        st.dictionaries(
            st.sampled_from(["nominal", "borrowing_limit", "lending_limit", "weight", "role", "org", "name"]),
            scalars,
            max_size=4,
        ),
    ),
)
def test_admin_writes_never_crash(api: Api, target: str, body: object) -> None:
    method = "POST" if target in ("/v1/tokens", "/v1/orgs") else "PUT"
    resp = api.client.request(
        method,
        target,
        content=json.dumps(body, allow_nan=True),
        headers={**api.as_("pool-admin"), "content-type": "application/json"},
    )
    assert resp.status_code < 500, resp.text
