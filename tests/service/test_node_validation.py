"""Node validation before hand-over, in the service (sim backend; the real program on
real Ray is tests/ray/test_node_validation.py): a node that joins, is uncordoned or is
named by an operator stays cordoned while its validation runs, and takes work only once
it passes; one that fails is quarantined; a run that says nothing is tried again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import col, select

from scheduler.api.app import create_app
from scheduler.api.context import ServerContext
from scheduler.backends.base import Launch
from scheduler.store import agents as agentstore
from scheduler.store import nodes as nodestore
from scheduler.store.tables import AuditRow, NodeRow
from values.domain import Health, Node
from values.lifecycle import JobState
from values.validation import ValidationRule

from .api_harness import make_api
from .cli_harness import serving
from .harness import Pool, nodes, orgs

PASSES = ValidationRule(enabled=True, env={"SIM_DURATION": "20"})
FAILS = ValidationRule(enabled=True, env={"SIM_DURATION": "20", "SIM_EXIT_CODE": "1"})


def _node(pool: Pool, name: str) -> NodeRow:
    with pool.db.read() as s:
        row = s.get(NodeRow, name)
        assert row is not None
        return row


def _request(pool: Pool, name: str) -> None:
    with pool.db.write() as s:
        row = s.get(NodeRow, name)
        assert row is not None
        nodestore.request_validation(s, row, "asked by a test", pool.clock())


def _join(pool: Pool, name: str = "h100-09") -> str:
    pool.backend.add_node(Node(name=name, flavor="h100", accelerators=8))
    return name


def test_a_node_that_joins_takes_work_only_after_its_validation_passed(db_url: str) -> None:
    pool = Pool(db_url, node_list=nodes(2), org_list=orgs(a=24), validation=PASSES)
    pool.cycle()  # the pool's first inventory is its bring-up: nothing validates
    assert {_node(pool, n).validation for n in ("h100-00", "h100-01")} == {None}
    new = _join(pool)
    pool.cycle(1)
    row = _node(pool, new)
    assert (row.validation, row.cordoned, row.validation_run) == ("running", True, 1)
    assert row.validation_peer == "h100-00"  # healthy, same flavor, first by name
    gang = pool.backend._gangs[f"validate-{new}/1"]  # type: ignore[attr-defined]
    assert gang.nodes == [new, "h100-00"] and gang.held == {new: 0, "h100-00": 0}  # no accelerators held

    job = pool.submit(replicas=3)  # needs the new node too: waits for the validation
    pool.cycle(5)
    assert pool.state(job) is JobState.PENDING
    pool.cycle(20)  # the run exits 0
    row = _node(pool, new)
    assert (row.validation, row.cordoned, row.validation_message) == ("passed", False, "validation passed")
    pool.cycle(1)
    assert pool.state(job) in (JobState.ADMITTED, JobState.RUNNING)
    assert pool.backend.overcommits == 0
    assert f"validate-{new}/1" not in pool.backend._gangs  # type: ignore[attr-defined]  # forgotten


def test_a_node_that_fails_validation_is_quarantined(db_url: str) -> None:
    pool = Pool(db_url, node_list=nodes(2), org_list=orgs(a=16), validation=FAILS)
    pool.cycle()
    _request(pool, "h100-01")
    pool.cycle(1)
    pool.cycle(25)
    row = _node(pool, "h100-01")
    assert (row.validation, row.cordoned) == ("failed", True)
    assert "exit" in row.validation_message
    with pool.db.read() as s:
        assert nodestore.quarantined(s) == ["h100-01"]  # counted as the quarantine's
        audit = s.exec(select(AuditRow).where(AuditRow.target == "h100-01").order_by(col(AuditRow.id))).all()
    assert json.loads(audit[-1].detail)["why"] == "validation"
    job = pool.submit(replicas=2)
    pool.cycle(5)
    assert pool.state(job) is JobState.PENDING  # it stays out of service


def test_a_busy_node_validates_once_its_work_is_done(db_url: str) -> None:
    pool = Pool(db_url, node_list=nodes(2), org_list=orgs(a=16), validation=PASSES)
    job = pool.submit(env={"SIM_DURATION": 30})
    pool.cycle()
    busy = pool.backend._gangs[f"{job}/0"].nodes[0]  # type: ignore[attr-defined]
    _request(pool, busy)
    pool.cycle(5)
    assert _node(pool, busy).validation == "pending"  # its running job is left alone
    pool.cycle(30)
    pool.cycle(1)
    assert pool.state(job) is JobState.SUCCEEDED
    assert _node(pool, busy).validation == "running"


def test_a_run_that_says_nothing_is_tried_again_then_fails(db_url: str) -> None:
    rule = ValidationRule(enabled=True, env={"SIM_DURATION": "20"}, tries=2)
    pool = Pool(db_url, node_list=nodes(3), org_list=orgs(a=24), validation=rule)
    pool.cycle()
    _request(pool, "h100-02")
    pool.cycle(1)
    assert _node(pool, "h100-02").validation_peer == "h100-00"
    pool.backend.set_health("h100-00", Health.UNHEALTHY, pool.clock())  # the peer dies
    pool.cycle(1)
    row = _node(pool, "h100-02")
    assert (row.validation, row.validation_run, row.validation_peer) == ("running", 2, "h100-01")
    assert row.validation_tries == 1
    pool.backend.set_health("h100-01", Health.UNHEALTHY, pool.clock())
    pool.cycle(1)
    row = _node(pool, "h100-02")
    assert (row.validation, row.cordoned) == ("failed", True)
    assert row.validation_message.startswith("2 runs said nothing")


def test_without_a_healthy_peer_the_validation_waits(db_url: str) -> None:
    pool = Pool(db_url, node_list=nodes(2), org_list=orgs(a=16), validation=PASSES)
    pool.cycle()
    pool.backend.set_health("h100-00", Health.UNHEALTHY, pool.clock())
    _request(pool, "h100-01")
    pool.cycle(1)
    assert _node(pool, "h100-01").validation == "pending"
    pool.backend.set_health("h100-00", Health.HEALTHY, pool.clock())
    pool.cycle(1)
    assert _node(pool, "h100-01").validation == "running"


def test_a_run_past_its_timeout_fails_the_node(db_url: str) -> None:
    rule = ValidationRule(enabled=True, env={"SIM_DURATION": "1000"}, timeout_seconds=60)
    pool = Pool(db_url, node_list=nodes(2), org_list=orgs(a=16), validation=rule)
    pool.cycle()
    _request(pool, "h100-01")
    pool.cycle(1)
    pool.cycle(61)
    row = _node(pool, "h100-01")
    assert (row.validation, row.validation_message) == ("failed", "validation did not finish in time")
    assert pool.backend._gangs["validate-h100-01/1"].stop_requested_at is not None  # type: ignore[attr-defined]
    pool.cycle(1)
    assert "validate-h100-01/1" not in pool.backend._gangs  # type: ignore[attr-defined]  # gone, forgotten


# --- the API and CLI edge --------------------------------------------------------------


@pytest.fixture
def api(db_url: str) -> tuple[Pool, TestClient]:
    from scheduler.store import tokens as tokenstore

    pool = Pool(db_url, node_list=nodes(2), org_list=orgs(a=16), validation=PASSES)
    pool.cycle()
    with pool.db.write() as s:
        _, secret = tokenstore.create(s, tokenstore.Role.POOL_ADMIN, None, "admin", pool.clock(), None)
    ctx = ServerContext(db=pool.db, clock=pool.clock, validation=PASSES)
    client = TestClient(create_app(ctx))
    client.headers["Authorization"] = f"Bearer {secret}"
    return pool, client


def test_uncordon_validates_first_where_the_pool_validates(api: tuple[Pool, TestClient]) -> None:
    pool, client = api
    assert client.post("/v1/nodes/h100-01/cordon").json()["cordoned"] is True
    node = client.post("/v1/nodes/h100-01/uncordon").json()
    assert (node["cordoned"], node["validation"], node["validation_message"]) == (
        True,
        "pending",
        "uncordoned",
    )
    pool.cycle(1)
    pool.cycle(20)
    node = client.get("/v1/nodes/h100-01").json()
    assert (node["cordoned"], node["validation"]) == (False, "passed")
    # An operator may hand a node over without a run.
    client.post("/v1/nodes/h100-01/cordon")
    node = client.post("/v1/nodes/h100-01/uncordon", params={"validate": "false"}).json()
    assert (node["cordoned"], node["validation"]) == (False, "passed")


def test_validate_cordons_and_runs(api: tuple[Pool, TestClient]) -> None:
    pool, client = api
    node = client.post("/v1/nodes/h100-00/validate").json()
    assert (node["cordoned"], node["validation"]) == (True, "pending")
    assert client.post("/v1/nodes/nope/validate").status_code == 404
    pool.cycle(1)
    assert client.get("/v1/nodes/h100-00").json()["validation_peer"] == "h100-01"


def test_validate_where_the_pool_does_not_validate_is_refused(db_url: str) -> None:
    from scheduler.store import tokens as tokenstore

    pool = Pool(db_url, node_list=nodes(2))
    pool.cycle()
    with pool.db.write() as s:
        _, secret = tokenstore.create(s, tokenstore.Role.POOL_ADMIN, None, "admin", pool.clock(), None)
    client = TestClient(create_app(ServerContext(db=pool.db, clock=pool.clock)))
    client.headers["Authorization"] = f"Bearer {secret}"
    r = client.post("/v1/nodes/h100-00/validate")
    assert r.status_code == 409 and "validation.enabled" in r.json()["detail"]
    assert client.get("/v1/nodes/h100-00").json()["cordoned"] is False  # nothing changed
    node = client.post("/v1/nodes/h100-00/uncordon").json()  # a plain uncordon, as before
    assert (node["cordoned"], node["validation"]) == (False, None)


def test_the_cli_validates_a_node_and_waits_for_the_result(tmp_path: Path) -> None:
    api = make_api(f"sqlite:///{tmp_path / 'pool.db'}", validation=PASSES)
    with serving(api) as live:
        code, out = live.run("nodes", "validate", "h100-02", "--wait", "--timeout", "60", token="pool-admin")
        assert code == 0, out
        assert out.splitlines()[0] == "h100-02: validation pending"
        assert "h100-02: running: running with peer h100-00" in out
        assert out.splitlines()[-1] == "h100-02: passed: validation passed"
        code, out = live.run("nodes", "list", "-o", "json", token="pool-admin")
        assert {n["name"]: n["validation"] for n in json.loads(out)}["h100-02"] == "passed"
        code, out = live.run("nodes", "validate", "h100-02", token="member@a")
        assert code == 1 and "pool-admin" in out
        code, out = live.run("nodes", "uncordon", "h100-01", token="pool-admin")
        assert code == 0 and "validates first" in out


def test_the_cli_exits_non_zero_when_the_node_fails(tmp_path: Path) -> None:
    api = make_api(f"sqlite:///{tmp_path / 'pool.db'}", validation=FAILS)
    with serving(api) as live:
        code, out = live.run("nodes", "validate", "h100-02", "--wait", "--timeout", "60", token="pool-admin")
        assert code == 1 and "h100-02: failed: rank 0: exit code 1" in out, out


def test_the_pingmesh_step_gets_the_healthy_nodes_with_a_live_agent(db_url: str) -> None:
    pool = Pool(db_url, node_list=nodes(3), org_list=orgs(a=24), validation=PASSES)
    launched: list[Launch] = []
    real = pool.backend.launch
    pool.backend.launch = lambda launch, now: (launched.append(launch), real(launch, now))[1]  # type: ignore[method-assign]
    pool.cycle()
    with pool.db.write() as s:
        agentstore.register(s, "h100-00", {"address": "10.0.0.1", "probe_port": 8643}, pool.clock() - 3600)
        agentstore.register(s, "h100-01", {"address": "10.0.0.2", "probe_port": 8643}, pool.clock())
        agentstore.register(s, "h100-02", {"address": "10.0.0.3", "probe_port": 9000}, pool.clock())
    new = _join(pool)
    pool.cycle(1)
    (run,) = [launch for launch in launched if launch.job_id == f"validate-{new}"]
    # h100-00's agent last reported an hour ago: its silence would read as the new node's loss.
    assert run.env["TRAINPOOL_VALIDATE_PINGMESH"] == "h100-01=10.0.0.2:8643,h100-02=10.0.0.3:9000"
    env = run.env
    assert (env["TRAINPOOL_VALIDATE_PINGMESH_SECONDS"], env["TRAINPOOL_VALIDATE_PINGMESH_MAX_LOSS"]) == (
        "10",
        "0.02",
    )
