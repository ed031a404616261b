"""/v1/agents over the real app and store: node-bound tokens, replayed reports, the
health evaluation moving a job off a node that turns unhealthy, and a straggler verdict
degrading its node when the node's agent agrees (sim backend)."""

from __future__ import annotations

from typing import Any

import pytest
from service.api_harness import Api, make_api  # tests/ is on sys.path (rootdir conftest)

from scheduler.health.metrics import HealthMetrics
from scheduler.health.service import HealthService
from scheduler.health.thresholds import Thresholds
from scheduler.store import agents as agentstore
from scheduler.store import jobs as jobstore
from values.lifecycle import JobState
from values.progress import ProgressRule

TH = Thresholds(
    window_seconds=10, min_probes=20, degrade_after_seconds=2, unhealthy_after_seconds=4, quiet_seconds=20,
    suspect_after_seconds=5, report_interval_seconds=1,
)  # fmt: skip
NODES = ["h100-00", "h100-01", "h100-02", "h100-03"]


@pytest.fixture
def api(tmp_path: Any) -> Api:
    # Stragglers after 10 s; a move costs more than the test's minute loses.
    rule = ProgressRule(straggler_after_seconds=10, restart_overhead_seconds=3600)
    a = make_api(f"sqlite:///{tmp_path / 'pool.db'}", progress=rule)
    a.client.app.state.health_thresholds = TH  # type: ignore[attr-defined]
    a.cycle()  # the loop syncs the sim backend's nodes into the store
    for node in NODES:
        resp = a.call("pool-admin", "POST", "/v1/agents/tokens", {"node": node, "name": "agent"})
        assert resp.status_code == 201, resp.text
        a.tokens[f"agent@{node}"] = resp.json()["secret"]
    return a


def register(api: Api, node: str, rack: str = "r1", who: str | None = None) -> dict[str, Any]:
    body = {"node": node, "address": "10.0.0.1", "probe_port": 8643, "rack": rack, "sent_at": api.clock()}
    resp = api.call(who or f"agent@{node}", "POST", "/v1/agents/register", body)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def report(
    api: Api, node: str, session: str, seq: int, probes: list[dict[str, Any]] | None = None, **kw: Any
) -> Any:
    body = {
        "session": session,
        "seq": seq,
        "sent_at": api.clock(),
        "interval": 1,
        "probes": probes or [],
        **kw,
    }
    return api.call(f"agent@{node}", "POST", f"/v1/agents/{node}/reports", body)


def test_an_agent_token_acts_for_its_own_node_only(api: Api) -> None:
    body = {"node": "h100-01", "address": "10.0.0.2", "probe_port": 8643, "sent_at": api.clock()}
    resp = api.call("agent@h100-00", "POST", "/v1/agents/register", body)
    assert resp.status_code == 403 and "h100-00" in resp.json()["detail"]
    session = register(api, "h100-01")["session"]
    resp = api.call("agent@h100-00", "POST", "/v1/agents/h100-01/reports",
                    {"session": session, "seq": 1, "sent_at": api.clock(), "interval": 1})  # fmt: skip
    assert resp.status_code == 403
    assert api.call("member@a", "POST", "/v1/agents/register", body).status_code == 403
    # ...and an agent token is no API token: it cannot read jobs or mint tokens.
    assert api.call("agent@h100-00", "GET", "/v1/jobs").status_code == 401
    assert api.call("agent@h100-00", "POST", "/v1/agents/tokens", {"node": "x"}).status_code == 401


def test_a_revoked_agent_token_is_refused(api: Api) -> None:
    tokens = api.call("pool-admin", "GET", "/v1/agents/tokens").json()
    mine = next(t for t in tokens if t["node"] == "h100-02")
    assert api.call("pool-admin", "DELETE", f"/v1/agents/tokens/{mine['id']}").status_code == 200
    body = {"node": "h100-02", "address": "10.0.0.3", "probe_port": 8643, "sent_at": api.clock()}
    assert api.call("agent@h100-02", "POST", "/v1/agents/register", body).status_code == 401


def test_replayed_stale_and_out_of_session_reports_are_refused(api: Api) -> None:
    session = register(api, "h100-00")["session"]
    assert report(api, "h100-00", session, 1).status_code == 200
    again = report(api, "h100-00", session, 1)
    assert again.status_code == 409 and again.json()["errors"][0]["field"] == "seq"
    assert report(api, "h100-00", session, 0).status_code == 409
    assert report(api, "h100-00", "not-the-session", 2).status_code == 409
    late = {"session": session, "seq": 2, "sent_at": api.clock() - 3600, "interval": 1}
    skewed = api.call("agent@h100-00", "POST", "/v1/agents/h100-00/reports", late)
    assert skewed.status_code == 422 and "sent_at" in skewed.json()["detail"]
    assert report(api, "h100-00", session, 2).status_code == 200
    # A new registration starts a new session: the old one's reports are refused.
    fresh = register(api, "h100-00")["session"]
    assert report(api, "h100-00", session, 3).status_code == 409
    assert report(api, "h100-00", fresh, 1).status_code == 200


def test_bad_report_fields_are_named(api: Api) -> None:
    session = register(api, "h100-00")["session"]
    resp = report(api, "h100-00", session, 1, probes=[{"peer": "h100-01", "sent": -1, "lost": 0}])
    assert resp.status_code == 422 and "probes" in resp.json()["detail"] and "sent" in resp.json()["detail"]


def test_peer_lists_come_from_the_registered_agents(api: Api) -> None:
    for node, rack in zip(NODES, ["r1", "r1", "r2", "r2"], strict=True):
        register(api, node, rack)
    peers = api.call("agent@h100-00", "GET", "/v1/agents/h100-00/peers").json()["peers"]
    assert [p["node"] for p in peers] == ["h100-01", "h100-02", "h100-03"]
    assert peers[0]["address"] == "10.0.0.1" and peers[0]["port"] == 8643


def test_a_job_on_a_node_that_turns_unhealthy_is_moved_without_charging_its_restarts(api: Api) -> None:
    ctx = api.ctx
    published: list[tuple[str, str]] = []  # what a backend would show (a Kubernetes Node condition)
    service = HealthService(
        ctx.db, TH, metrics=HealthMetrics.of(ctx.metrics.registry), clock=api.clock,
        publish=lambda node, health, _why: published.append((node, health.value)),
    )  # fmt: skip
    sessions = {
        n: register(api, n, rack)["session"] for n, rack in zip(NODES, ["r1", "r1", "r2", "r2"], strict=True)
    }
    job = api.submit("member@a", gang={"flavor": "h100", "accelerators": 8}, grace_period_seconds=1)
    api.cycle(1)
    api.cycle(1)
    with ctx.db.read() as s:
        row = jobstore.get(s, job["id"])
        alloc = jobstore.allocation(s, row.id, row.attempt)
        assert row.state == JobState.RUNNING and alloc is not None
        sick = alloc.assignments.split('"')[1]
    service.tick()  # counts job events from here on
    moved_at = None
    for second in range(40):
        api.clock.t += 1
        seq = second + 1
        for node in NODES:
            probes = [
                {"peer": p, "sent": 10, "lost": 4 if sick in (node, p) else 0, "rtt_median": 0.0003}
                for p in NODES if p != node
            ]  # fmt: skip
            assert report(api, node, sessions[node], seq, probes).status_code == 200
        service.tick()
        api.cycle(0)
        with ctx.db.read() as s:
            row = jobstore.get(s, job["id"])
        if moved_at is None and row.attempt > 0:
            moved_at = second
    assert moved_at is not None, "the job was never moved"
    events = api.call("member@a", "GET", f"/v1/jobs/{job['id']}/events").json()
    assert any(e["event"] == "preempt" and e["reason"] == "health" for e in events)
    assert row.restarts == 0  # infrastructure's fault: the restart budget is untouched
    assert row.state == JobState.RUNNING and row.attempt == 1  # running again, after one move
    with ctx.db.read() as s:
        now_on = jobstore.allocation(s, row.id, row.attempt)
    assert now_on is not None and sick not in now_on.assignments  # elsewhere
    node = api.call("member@a", "GET", f"/v1/nodes/{sick}").json()
    assert node["health"] == "unhealthy" and "loss" in node["reported_reason"]
    health = api.call("member@a", "GET", f"/v1/agents/{sick}/health").json()
    assert health["verdict"]["state"] == "unhealthy"
    assert health["verdict"]["evidence"]["findings"][0]["kind"] == "node"
    assert [e["state"] for e in health["events"] if e["subject"] == sick][:2] == ["unhealthy", "degraded"]
    metrics = api.call("pool-admin", "GET", "/metrics").text
    assert 'trainpool_jobs_moved_total{org="a",reason="health"} 1.0' in metrics
    assert f'trainpool_node_health_state{{node="{sick}",state="unhealthy"}} 1.0' in metrics
    assert 'trainpool_localized_faults_total{kind="node"} 1.0' in metrics
    others = [n for n in NODES if n != sick]
    assert all(api.call("member@a", "GET", f"/v1/nodes/{n}").json()["health"] == "healthy" for n in others)
    assert [h for n, h in published if n == sick][-2:] == ["degraded", "unhealthy"]


def test_an_agent_whose_clock_jumps_makes_its_node_suspect_not_its_peers(api: Api) -> None:
    """Its reports carry the jumped time, are refused as skewed, and it falls silent: the
    heartbeat rule makes its own node suspect (degraded, not unhealthy). Its peers keep
    reporting good probes to each other and to it, and none of them is blamed."""
    service = HealthService(api.ctx.db, TH, clock=api.clock)
    sessions = {
        n: register(api, n, rack)["session"] for n, rack in zip(NODES, ["r1", "r1", "r2", "r2"], strict=True)
    }
    jumped = "h100-02"
    refused = 0
    for second in range(1, 31):
        api.clock.t += 1
        for node in NODES:
            probes = [{"peer": p, "sent": 10, "lost": 0, "rtt_median": 0.0003} for p in NODES if p != node]
            if node == jumped and second > 10:  # its clock jumps an hour ahead
                body = {"session": sessions[node], "seq": second, "sent_at": api.clock() + 3600,
                        "interval": 1, "probes": probes}  # fmt: skip
                resp = api.call(f"agent@{node}", "POST", f"/v1/agents/{node}/reports", body)
                refused += resp.status_code == 422
                continue
            assert report(api, node, sessions[node], second, probes).status_code == 200
        service.tick()
    assert refused == 20, "every report from the jumped clock was refused"
    health = {n: api.call("member@a", "GET", f"/v1/nodes/{n}").json()["health"] for n in NODES}
    assert health == {"h100-00": "healthy", "h100-01": "healthy", jumped: "degraded", "h100-03": "healthy"}
    verdict = api.call("member@a", "GET", f"/v1/agents/{jumped}/health").json()["verdict"]
    assert "suspect" in " ".join(verdict["reasons"]) or "silent" in " ".join(verdict["reasons"]), verdict


def test_a_valid_agent_token_is_served_from_an_address_throttled_for_bad_ones(api: Api) -> None:
    register(api, "h100-00")
    bad = {"Authorization": f"Bearer {agentstore.TOKEN_PREFIX}guess"}
    codes = [api.client.post("/v1/agents/register", json={}, headers=bad).status_code for _ in range(21)]
    assert codes[:20] == [401] * 20 and codes[20] == 429
    assert register(api, "h100-00")["node"] == "h100-00"  # the node's own agent is not locked out


HELD_DOWN = {"index": 0, "utilization": 100, "sm_clock_mhz": 990, "max_sm_clock_mhz": 1980,
             "clock_events": ["hw_slowdown"]}  # fmt: skip
FINE = {"index": 0, "utilization": 100, "sm_clock_mhz": 1980, "max_sm_clock_mhz": 1980, "clock_events": []}


@pytest.mark.parametrize(("slow_gpu", "health"), [(HELD_DOWN, "degraded"), (FINE, "healthy")],
                         ids=["its-agent-agrees", "its-agent-sees-nothing"])  # fmt: skip
def test_a_straggler_verdict_degrades_its_node_when_the_nodes_agent_agrees(
    api: Api, slow_gpu: dict[str, Any], health: str
) -> None:
    ctx = api.ctx
    service = HealthService(ctx.db, TH, metrics=HealthMetrics.of(ctx.metrics.registry), clock=api.clock)
    sessions = {n: register(api, n)["session"] for n in NODES}
    env = {"SIM_DURATION": "100000", "SIM_STEP_SECONDS": "1", "SIM_SLOW_NODE": "h100-01",
           "SIM_SLOW_FACTOR": "3"}  # fmt: skip
    job = api.submit("member@a", gang={"flavor": "h100", "accelerators": 8, "replicas": 2}, env=env)
    for second in range(1, 41):
        api.clock.t += 1
        for node in NODES:
            probes = [{"peer": p, "sent": 10, "lost": 0, "rtt_median": 0.0003} for p in NODES if p != node]
            gpu = slow_gpu if node == "h100-01" else FINE
            assert report(api, node, sessions[node], second, probes, gpus=[gpu]).status_code == 200
        api.cycle(0)
        service.tick()
    events = api.call("member@a", "GET", f"/v1/jobs/{job['id']}/events").json()
    assert [e["event"] for e in events].count("straggler") == 1
    node = api.call("member@a", "GET", "/v1/nodes/h100-01").json()
    assert node["health"] == health, node
    others = [api.call("member@a", "GET", f"/v1/nodes/{n}").json()["health"] for n in NODES[::2] + NODES[3:]]
    assert others == ["healthy"] * 3
    metrics = api.call("pool-admin", "GET", "/metrics").text
    degraded = "1.0" if health == "degraded" else "0.0"
    assert f"trainpool_straggler_nodes_degraded_total {degraded}" in metrics
    if health == "degraded":
        assert "straggler on this node (straggler: rank 1 on h100-01 steps 3.00x" in node["reported_reason"]
        assert node["reported_reason"].endswith("its own evidence: gpu clocks held down (hw_slowdown)")
