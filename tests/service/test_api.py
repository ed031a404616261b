"""The HTTP API on SQLite and PostgreSQL: submit, list, get, cancel, events, queue,
nodes, quotas, tokens, usage, and clear 4xx answers to bad input."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from scheduler.checkpoint_folder import DEFAULT_ROOT, job_folder

from .api_harness import Api, make_api


@pytest.fixture
def api(db_url: str) -> Iterator[Api]:
    made = make_api(db_url)
    with made.client:
        yield made
    made.ctx.db.dispose()


def test_a_submitted_job_runs_to_completion_and_its_events_tell_the_story(api: Api) -> None:
    job = api.submit("member@a", env={"SIM_DURATION": "10"})
    assert job["state"] == "PENDING" and job["org"] == "a"
    api.cycle()
    api.cycle(1)
    got = api.call("member@a", "GET", f"/v1/jobs/{job['id']}").json()
    assert got["state"] == "RUNNING"
    assert got["allocation"]["flavor"] == "h100" and got["allocation"]["nodes"][0]["replicas"] == 1
    api.cycle(20)
    events = api.call("member@a", "GET", f"/v1/jobs/{job['id']}/events").json()
    assert [e["event"] for e in events] == ["submitted", "admit", "launched", "started", "succeeded"]
    assert events[1]["reason"] == "nominal"


def test_submit_is_idempotent_with_a_client_request_id(api: Api) -> None:
    body = {"spec": {"name": "x", "org": "a", "gang": {"flavor": "h100"}}, "client_request_id": "req-1"}
    first = api.call("member@a", "POST", "/v1/jobs", body)
    again = api.call("member@a", "POST", "/v1/jobs", body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    body["spec"]["name"] = "y"
    clash = api.call("member@a", "POST", "/v1/jobs", body)
    assert clash.status_code == 409 and "client_request_id" in clash.json()["detail"]
    assert len(api.call("member@a", "GET", "/v1/jobs").json()) == 1


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"name": "x", "org": "a", "gang": {"flavor": "h100", "replicas": 0}}, "spec.gang.replicas"),
        ({"name": "Bad Name", "org": "a", "gang": {"flavor": "h100"}}, "spec.name"),
        ({"name": "x", "org": "a", "gang": {"flavor": "tpu"}}, "spec.gang.flavors[0]"),
        ({"name": "x", "org": "a", "gang": {"flavor": "h100"}, "priority": "urgent"}, "spec.priority"),
        ({"name": "x", "org": "a", "gang": {"flavor": "h100"}, "team": "ghost"}, "spec.team"),
        ({"name": "x", "org": "a", "gang": {"flavor": "h100"}, "bogus": 1}, "spec.bogus"),
        ({"name": "x", "org": "a", "gang": {"flavor": "h100", "cpu": "lots"}}, "spec.gang.cpu"),
        ({"name": "x", "org": "a"}, "spec.gang"),
        (
            {"name": "x", "org": "a", "gang": {"flavor": "h100", "replicas": 2, "min_replicas": 3}},
            "spec.gang.min_replicas",
        ),
    ],
)
def test_bad_specs_get_a_422_naming_the_field(api: Api, spec: dict[str, object], field: str) -> None:
    resp = api.call("member@a", "POST", "/v1/jobs", {"spec": spec})
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"].startswith(f"{field}: "), resp.json()
    assert api.call("member@a", "GET", "/v1/jobs").json() == []  # nothing half-written


def test_malformed_requests_are_4xx_not_500(api: Api) -> None:
    raw = api.client.post(
        "/v1/jobs", content=b"{not json", headers={**api.as_("member@a"), "content-type": "application/json"}
    )
    assert raw.status_code == 422 and "JSON" in raw.json()["detail"]
    assert api.call("member@a", "POST", "/v1/jobs", [1, 2]).status_code == 422
    assert api.call("member@a", "GET", "/v1/jobs", limit="-5").json()["detail"].startswith("limit: ")
    assert api.call("member@a", "GET", "/v1/jobs", state="DANCING").status_code == 422
    assert api.call("member@a", "GET", "/v1/usage").status_code == 403
    assert api.call("pool-admin", "GET", "/v1/usage", by="planet").json()["detail"].startswith("by: ")
    bad_quota = api.call("pool-admin", "PUT", "/v1/orgs/a/quotas/h100", {"nominal": 2, "lending_limit": 5})
    assert bad_quota.status_code == 422 and bad_quota.json()["detail"].startswith("lending_limit: ")
    assert api.call("member@a", "GET", "/v1/jobs/nope").status_code == 404
    huge = api.client.post("/v1/jobs", content=b"x" * (2 * 1024 * 1024), headers=api.as_("member@a"))
    assert huge.status_code == 413 and huge.json()["detail"].startswith("body: ")

    def chunks():  # no Content-Length: the body is sent chunked and counted as it comes
        for _ in range(64):
            yield b"x" * 65_536

    chunked = api.client.post("/v1/jobs", content=chunks(), headers=api.as_("member@a"))
    assert chunked.status_code == 413 and chunked.json()["detail"].startswith("body: ")
    assert api.call(None, "GET", "/v1/jobs").status_code == 401
    assert api.client.get("/v1/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_list_filters_by_state_and_cancel_is_refused_twice(api: Api) -> None:
    first = api.submit("member@a")
    api.submit("member@a")
    cancelled = api.call("member@a", "POST", f"/v1/jobs/{first['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "CANCELLED"
    again = api.call("member@a", "POST", f"/v1/jobs/{first['id']}/cancel")
    assert again.status_code == 409 and "CANCELLED" in again.json()["detail"]
    listed = api.call("member@a", "GET", "/v1/jobs", state="CANCELLED").json()
    assert [j["id"] for j in listed] == [first["id"]]


def test_the_queue_says_why_and_when(api: Api) -> None:
    api.call("pool-admin", "PUT", "/v1/orgs/a/quotas/h100", {"nominal": 32})
    for _ in range(4):
        api.submit("member@a", gang={"flavor": "h100", "accelerators": 6}, max_runtime_seconds=600)
    api.submit("member@a", gang={"flavor": "h100", "accelerators": 4})
    api.cycle()
    queue = api.call("member@a", "GET", "/v1/queue").json()
    # 4 nodes of 8 with 6 used on each: quota allows 4 more but no node has them; the
    # job holds the reservation for the first node to free up, at the runtime limit.
    assert len(queue) == 1
    assert queue[0]["reason"] == "reserved" and queue[0]["message"]
    assert queue[0]["estimated_start"] == pytest.approx(api.clock() + 600)
    assert api.call("member@b", "GET", "/v1/queue").json() == []


def test_cordon_keeps_new_work_off_a_node(api: Api) -> None:
    api.cycle()  # the loop learns the inventory
    names = [n["name"] for n in api.call("member@a", "GET", "/v1/nodes").json()]
    assert len(names) == 4
    for name in names[1:]:
        assert api.call("pool-admin", "POST", f"/v1/nodes/{name}/cordon").json()["cordoned"] is True
    job = api.submit("member@a", gang={"flavor": "h100", "accelerators": 8})
    api.cycle()
    got = api.call("member@a", "GET", f"/v1/jobs/{job['id']}").json()
    assert got["allocation"]["nodes"][0]["node"] == names[0]
    assert api.call("member@a", "GET", f"/v1/nodes/{names[0]}").json()["allocated"] == 8


def test_quota_changes_and_token_grants_are_audited(api: Api) -> None:
    resp = api.call("pool-admin", "PUT", "/v1/orgs/a/quotas/h100", {"nominal": 4, "borrowing_limit": 0})
    assert resp.status_code == 200
    assert api.call("member@a", "GET", "/v1/orgs/a/quotas").json()["h100"]["nominal"] == 4
    made = api.call("org-admin@a", "POST", "/v1/tokens", {"role": "member", "org": "a", "name": "bob"})
    assert made.status_code == 201
    secret = made.json()["secret"]
    assert api.client.get("/v1/whoami", headers={"Authorization": f"Bearer {secret}"}).json()["org"] == "a"
    assert (
        api.call("org-admin@a", "DELETE", f"/v1/tokens/{made.json()['id']}").json()["revoked_at"] is not None
    )
    assert api.client.get("/v1/whoami", headers={"Authorization": f"Bearer {secret}"}).status_code == 401
    actions = [a["action"] for a in api.call("pool-admin", "GET", "/v1/audit").json()]
    assert {"quota.set", "token.create", "token.revoke"} <= set(actions)


def test_usage_is_accounted_per_org(api: Api) -> None:
    api.submit(
        "member@a", gang={"flavor": "h100", "replicas": 2, "accelerators": 8}, env={"SIM_DURATION": "90"}
    )
    api.cycle()
    api.cycle(100)
    rows = api.call("pool-admin", "GET", "/v1/usage", by="org").json()
    assert [(r["org"], r["accelerator_hours"]) for r in rows] == [("a", pytest.approx(16 * 90 / 3600))]
    # Seen running only once it had ended (one cycle 100 s later): held, none of it seen productive.
    assert rows[0]["effective_time_ratio"] == 0.0 and rows[0]["lost_accelerator_hours"]["startup"] > 0
    assert api.call("org-admin@b", "GET", "/v1/usage").json() == []


def test_ops_endpoints(api: Api) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok"}
    assert api.client.get("/readyz").status_code == 200
    assert api.client.get("/openapi.json").json()["info"]["title"] == "trainpool"
    api.submit("member@a")
    api.cycle()
    api.cycle(1)  # gauges describe the snapshot a cycle decided on
    text = api.call("pool-admin", "GET", "/metrics").text
    assert 'trainpool_running_jobs{flavor="h100",org="a"} 1.0' in text
    assert "trainpool_api_request_seconds_bucket" in text and 'route="/v1/jobs"' in text
    assert "j-" not in text  # no job ids in labels


def test_logs_where_the_backend_keeps_them(api: Api) -> None:
    job = api.submit("member@a", env={"SIM_DURATION": "5"})
    missing = api.call("member@a", "GET", f"/v1/jobs/{job['id']}/logs")
    assert missing.status_code == 404 and missing.json()["detail"].startswith("attempt: no logs")
    api.cycle()
    api.cycle(10)
    lines = api.call("member@a", "GET", f"/v1/jobs/{job['id']}/logs").json()["lines"]
    assert "launched on h100-" in lines[0] and lines[-1].endswith("succeeded")


def test_an_agent_report_moves_work_off_a_sick_node(api: Api) -> None:
    job = api.submit("member@a", gang={"flavor": "h100", "accelerators": 8})
    api.cycle()
    api.cycle(1)
    node = api.call("member@a", "GET", f"/v1/jobs/{job['id']}").json()["allocation"]["nodes"][0]["node"]
    report = {"health": "unhealthy", "reason": "pingmesh: 40% loss to rack peers"}
    got = api.call("pool-admin", "PUT", f"/v1/nodes/{node}/health", report).json()
    assert got["health"] == "unhealthy" and got["reported_reason"].startswith("pingmesh")
    assert api.call("member@a", "PUT", f"/v1/nodes/{node}/health", report).status_code == 403
    api.cycle(1)  # preempted for health
    api.cycle(1)  # gone: requeued and placed elsewhere
    api.cycle(1)
    moved = api.call("member@a", "GET", f"/v1/jobs/{job['id']}").json()
    events = [e["event"] for e in api.call("member@a", "GET", f"/v1/jobs/{job['id']}/events").json()]
    assert "preempt" in events and moved["attempt"] == 1
    assert moved["allocation"]["nodes"][0]["node"] != node
    bad = api.call("pool-admin", "PUT", f"/v1/nodes/{node}/health", {"health": "sick"})
    assert bad.status_code == 422 and bad.json()["detail"].startswith("health: ")


def test_a_restarted_job_resumes_from_its_latest_checkpoint(api: Api) -> None:
    backend = api.host.loop.backend
    launches: list[dict[str, str]] = []
    original = backend.launch

    def spy(launch: Any, now: float) -> None:
        launches.append(dict(launch.env))
        original(launch, now)

    backend.launch = spy  # type: ignore[method-assign]
    job = api.submit(
        "member@a", env={"SIM_DURATION": "10", "SIM_FAIL_ATTEMPTS": "1"}, restart={"backoff_seconds": 0}
    )
    api.cycle()
    for step in (1, 2):
        body = {"path": f"{job_folder(DEFAULT_ROOT, job['id'])}/step-{step}", "step": step}
        assert api.call("member@a", "POST", f"/v1/jobs/{job['id']}/checkpoints", body).status_code == 201
    api.cycle(11)  # attempt 0 exits 1: requeued and relaunched
    api.cycle(1)
    assert [env.get("TRAINPOOL_ATTEMPT") for env in launches] == ["0", "1"]
    assert "TRAINPOOL_RESUME_FROM" not in launches[0]
    assert launches[1]["TRAINPOOL_RESUME_FROM"] == f"{job_folder(DEFAULT_ROOT, job['id'])}/step-2"


def test_a_quota_patch_changes_only_the_fields_given(api: Api) -> None:
    path = "/v1/orgs/a/quotas/h100"
    assert api.call("pool-admin", "PUT", path, {"nominal": 16, "borrowing_limit": 8}).status_code == 200
    changed = api.call("pool-admin", "PATCH", path, {"lending_limit": 4}).json()
    assert (changed["nominal"], changed["borrowing_limit"], changed["lending_limit"]) == (16, 8, 4)
    unlimited = api.call("pool-admin", "PATCH", path, {"borrowing_limit": None}).json()
    assert unlimited["borrowing_limit"] is None and unlimited["lending_limit"] == 4
    refused = api.call("pool-admin", "PATCH", path, {"nominal": None})
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "nominal"
    assert (
        api.call("pool-admin", "PATCH", path, {"nominal": 2}).json()["errors"][0]["field"] == "lending_limit"
    )
    assert api.call("pool-admin", "GET", "/v1/orgs/a/quotas").json()["h100"]["nominal"] == 16  # nothing lost


def test_an_elastic_gang_shows_its_size_and_range_and_the_queue_its_minimum(api: Api) -> None:
    # Org a's guarantee is two of the four nodes: the gang (1 to 4 replicas) starts with
    # two (extra replicas do not borrow); b's elastic gang needs at least three, and waits.
    mine = api.submit(
        "member@a", gang={"flavor": "h100", "replicas": 4, "min_replicas": 1, "accelerators": 8}
    )
    api.cycle()
    got = api.call("member@a", "GET", f"/v1/jobs/{mine['id']}").json()
    assert (got["replicas"], got["min_replicas"], got["max_replicas"], got["accelerators"]) == (2, 1, 4, 16)
    assert got["resizes"] == []
    theirs = api.submit(
        "member@b", "b", gang={"flavor": "h100", "replicas": 4, "min_replicas": 3, "accelerators": 8}
    )
    api.cycle()
    (row,) = api.call("member@b", "GET", "/v1/queue").json()
    assert (row["id"], row["accelerators"], row["min_accelerators"]) == (theirs["id"], 32, 24)


def test_describe_shows_the_attempts_progress_and_a_slow_rank(api: Api) -> None:
    env = {"SIM_DURATION": "100000", "SIM_STEP_SECONDS": "2"} | {
        "SIM_SLOW_NODE": "h100-01",
        "SIM_SLOW_FACTOR": "2",
    }
    job = api.submit("member@a", gang={"flavor": "h100", "replicas": 2, "accelerators": 8}, env=env)
    api.cycle()
    assert api.call("member@a", "GET", f"/v1/jobs/{job['id']}").json()["progress"] is None  # no report yet
    for _ in range(10):
        api.cycle(4)
    api.clock.t += 3
    got = api.call("member@a", "GET", f"/v1/jobs/{job['id']}").json()["progress"]
    # The gang steps at its slow rank's pace (4 s); that rank computes 4 s, its peer 2 s.
    assert (got["step"], got["steps_per_second"], got["seconds_since_progress"]) == (10, 0.25, 3.0)
    ranks = {r["node"]: r for r in got["ranks"]}
    assert (ranks["h100-01"]["step_seconds"], ranks["h100-00"]["step_seconds"]) == (4.0, 2.0)
    assert ranks["h100-01"]["slow_for_seconds"] == 39.0 and ranks["h100-00"]["slow_for_seconds"] is None
    spent = api.call("member@a", "GET", f"/v1/jobs/{job['id']}").json()["goodput"]
    # Held 43 s; running from the second cycle, 4 s in: the slowness is not a loss (work kept).
    assert spent["effective_time_ratio"] == round(39 / 43, 4)
    assert spent["lost_accelerator_hours"]["startup"] == round(16 * 4 / 3600, 4)
