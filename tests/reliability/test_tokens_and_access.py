"""Tokens and cross-org access: hashed at rest, expiring, revocable at once, never
logged; bad-token floods are slowed down; attempts outside one's org are refused and
audited."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import httpx
import pytest
from service.api_harness import Api, make_api

from scheduler.store import orgs as orgstore
from scheduler.store.tables import TokenRow
from scheduler.store.tokens import hash_secret


@pytest.fixture
def api(tmp_path: Path) -> Api:
    return make_api(f"sqlite:///{tmp_path / 'pool.db'}")


def _whoami(api: Api, secret: str) -> int:
    return int(api.client.get("/v1/whoami", headers={"Authorization": f"Bearer {secret}"}).status_code)


def test_a_token_expires_at_its_ttl(api: Api) -> None:
    made = api.call("org-admin@a", "POST", "/v1/tokens", {"role": "member", "org": "a", "ttl_seconds": 60})
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["expires_at"] == pytest.approx(api.clock() + 60)
    assert _whoami(api, body["secret"]) == 200
    api.clock.t += 61
    api.ctx.auth_cache.clear()  # a server that has not seen this token in the last 5 s
    assert _whoami(api, body["secret"]) == 401


def test_the_auth_cache_never_outlives_the_token(api: Api) -> None:
    made = api.call("org-admin@a", "POST", "/v1/tokens", {"role": "member", "org": "a", "ttl_seconds": 1})
    secret = made.json()["secret"]
    assert _whoami(api, secret) == 200  # cached now, for at most the token's last second
    _, cached_until = api.ctx.auth_cache[hash_secret(secret)]
    assert cached_until - time.monotonic() <= 1.0


def test_default_lifetime_is_90_days_and_bad_lifetimes_name_the_field(api: Api) -> None:
    made = api.call("org-admin@a", "POST", "/v1/tokens", {"role": "member", "org": "a"}).json()
    assert made["expires_at"] == pytest.approx(api.clock() + 90 * 86_400)
    for bad in (0, -5, 1e12, "soon"):
        resp = api.call(
            "org-admin@a", "POST", "/v1/tokens", {"role": "member", "org": "a", "ttl_seconds": bad}
        )
        assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == "ttl_seconds"


def test_secrets_are_stored_hashed_and_never_logged(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    made = api.call("org-admin@a", "POST", "/v1/tokens", {"role": "member", "org": "a"}).json()
    secret = made["secret"]
    _whoami(api, secret)
    _whoami(api, secret + "x")
    api.call("member@a", "GET", "/v1/jobs/j-nope")
    with api.ctx.db.read() as s:
        stored = s.get(TokenRow, made["id"])
        assert stored is not None and secret not in stored.model_dump_json()
        assert all(secret not in r.detail for r in orgstore.audit_log(s))
    assert secret not in caplog.text
    listed = api.call("pool-admin", "GET", "/v1/tokens").text
    assert secret not in listed and "secret_hash" not in listed


def test_a_flood_of_bad_tokens_is_slowed_down(api: Api) -> None:
    codes = [_whoami(api, f"tp_guess-{i}") for i in range(25)]
    assert codes[:20] == [401] * 20
    assert codes[20:] == [429] * 5, "past 20 failures a minute the address is refused"
    assert _whoami(api, api.tokens["member@a"]) == 200, "a valid token from the same address is served"
    assert _whoami(api, "tp_guess-again") == 429, "and the address stays throttled for bad ones"


def test_cross_org_attempts_are_refused_and_audited(api: Api) -> None:
    job = api.submit("member@b", org="b")
    looked = api.call("member@a", "GET", f"/v1/jobs/{job['id']}")
    assert looked.status_code == 404, "another org's job looks like no job"
    cancelled = api.call("member@a", "POST", f"/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 404
    submitted = api.call(
        "member@a", "POST", "/v1/jobs", {"spec": {"name": "x", "org": "b", "gang": {"flavor": "h100"}}}
    )
    assert submitted.status_code == 403
    quota = api.call("org-admin@a", "PUT", "/v1/orgs/b/quotas/h100", {"nominal": 99})
    assert quota.status_code == 403
    with api.ctx.db.read() as s:
        denied = [r for r in orgstore.audit_log(s) if r.action == "access.denied"]
    targets = sorted(r.target for r in denied)
    assert targets == sorted(
        [
            f"GET /v1/jobs/{job['id']}",
            f"POST /v1/jobs/{job['id']}/cancel",
            "POST /v1/jobs",
            "PUT /v1/orgs/b/quotas/h100",
        ]
    )
    assert api.call("pool-admin", "GET", f"/v1/jobs/{job['id']}").json()["state"] == "PENDING", "untouched"


def _mint(api: Api, secret: str, **body: object) -> httpx.Response:
    return api.client.post(
        "/v1/tokens",
        json={"role": "member", "org": "a", **body},
        headers={"Authorization": f"Bearer {secret}"},
    )


def test_a_token_cannot_outlive_the_token_that_made_it(api: Api) -> None:
    short = api.call("pool-admin", "POST", "/v1/tokens", {"role": "org-admin", "org": "a", "ttl_seconds": 60})
    admin = short.json()
    ten_years = _mint(api, admin["secret"], ttl_seconds=10 * 365 * 86_400)
    assert ten_years.status_code == 422
    problem = ten_years.json()["errors"][0]
    assert problem["field"] == "ttl_seconds" and "expires in 60 s" in problem["message"]
    by_default = _mint(api, admin["secret"]).json()
    assert by_default["expires_at"] == pytest.approx(admin["expires_at"])  # 90 days, cut to the maker's
    api.clock.t += 61
    api.ctx.auth_cache.clear()
    assert _whoami(api, by_default["secret"]) == 401


def test_revoking_an_org_admin_revokes_what_it_made_and_what_that_made(api: Api) -> None:
    admin = api.call("pool-admin", "POST", "/v1/tokens", {"role": "org-admin", "org": "a"}).json()
    deputy = _mint(api, admin["secret"], role="org-admin").json()
    member = _mint(api, deputy["secret"]).json()
    unrelated = api.call("pool-admin", "POST", "/v1/tokens", {"role": "member", "org": "a"}).json()
    gone = api.call("pool-admin", "DELETE", f"/v1/tokens/{admin['id']}").json()
    assert sorted(gone["also_revoked"]) == sorted([deputy["id"], member["id"]])
    assert [_whoami(api, t["secret"]) for t in (admin, deputy, member)] == [401, 401, 401]
    assert _whoami(api, unrelated["secret"]) == 200
    with api.ctx.db.read() as s:
        cascaded = [
            r for r in orgstore.audit_log(s) if r.action == "token.revoke" and "revoked_with" in r.detail
        ]
    assert {r.target for r in cascaded} == {deputy["id"], member["id"]}


def test_revoking_a_pool_admin_token_leaves_the_tokens_it_made(api: Api) -> None:
    rotated = api.call("pool-admin", "POST", "/v1/tokens", {"role": "pool-admin"}).json()
    org_admin = _mint(api, rotated["secret"], role="org-admin").json()
    gone = api.call("pool-admin", "DELETE", f"/v1/tokens/{rotated['id']}").json()
    assert gone["also_revoked"] == []
    assert _whoami(api, org_admin["secret"]) == 200


def test_a_maker_revoked_elsewhere_mints_nothing_while_its_auth_is_cached(api: Api) -> None:
    admin = api.call("pool-admin", "POST", "/v1/tokens", {"role": "org-admin", "org": "a"}).json()
    assert _whoami(api, admin["secret"]) == 200  # now in this server's auth cache
    with api.ctx.db.write() as s:  # another server revokes it
        row = s.get(TokenRow, admin["id"])
        assert row is not None
        row.revoked_at = api.clock()
        s.add(row)
    assert _mint(api, admin["secret"]).status_code == 401


def test_metrics_need_the_scrape_token_or_a_pool_admin(api: Api) -> None:
    api.ctx.metrics_token = "tp_scrape-only"
    assert api.client.get("/metrics").status_code == 401, "every org's figures: not for anyone"
    for who in ("member@a", "org-admin@a"):
        assert api.call(who, "GET", "/metrics").status_code == 403
    assert api.call("pool-admin", "GET", "/metrics").status_code == 200
    scrape = {"Authorization": "Bearer tp_scrape-only"}
    assert "trainpool_" in api.client.get("/metrics", headers=scrape).text
    assert api.client.get("/v1/jobs", headers=scrape).status_code == 401, (
        "the scrape token reads /metrics only"
    )
    assert api.client.get("/metrics", headers={"Authorization": "Bearer tp_scrape-onlx"}).status_code == 401
