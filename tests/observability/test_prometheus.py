"""A real Prometheus scrapes a real `trainpool server` (sim backend) and two real
`trainpool agent`s under a small workload; every dashboard query must run and (unless
marked may_be_empty) return data, with its template variables at "All" and, on the
organizations dashboard, at one org and flavor; every alert rule must evaluate without
error."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from scheduler.observability.dashboards import DASHBOARDS, ORGS, DashboardSpec, Query, expand
from scheduler.observability.rules import all_alerts

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
ADMIN = "tp_prometheus-test-admin-token-0123456789"
METRICS_TOKEN = "tp_prometheus-test-scrape-token-0123456789"
# Two flavors, so a dashboard query that sums flavors together shows up; the workload
# uses h100 only.
POOL = """
name: observed
flavors: [{name: h100}, {name: a100}]
node_groups:
  - {flavor: h100, count: 4, accelerators: 8, racks_per_spine: 2, name_prefix: h100}
  - {flavor: a100, count: 1, accelerators: 8, name_prefix: a100}
orgs:
  - {name: a, quotas: {h100: {nominal: 16}, a100: {nominal: 8}}}
  - {name: b, quotas: {h100: {nominal: 16}}}
progress: {hang_floor_seconds: 2}
validation: {enabled: true, env: {SIM_DURATION: "1"}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    server: str
    prometheus: str

    def query(self, expr: str) -> dict[str, Any]:
        resp = httpx.get(f"{self.prometheus}/api/v1/query", params={"query": expr}, timeout=10)
        body: dict[str, Any] = resp.json()
        return body

    def label_values(self, selector: str, label: str) -> set[str]:
        """What Grafana's ``label_values(selector, label)`` lists (the same API call)."""
        resp = httpx.get(
            f"{self.prometheus}/api/v1/label/{label}/values", params={"match[]": selector}, timeout=10
        )
        body = resp.json()
        assert body.get("status") == "success", body
        return set(body["data"])


class Procs:
    def __init__(self, workdir: Path) -> None:
        self.workdir, self.procs = workdir, []  # type: ignore[var-annotated]

    def start(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        self.procs.append((p, log))
        return p

    def stop_all(self) -> None:
        for p, _ in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p, log in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            log.close()


def _wait(check: Any, what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except httpx.TransportError:
            result = None
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"{what} not reached in {timeout}s")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("prometheus not installed (apt-get install prometheus; .ci/run does)")
    work = tmp_path_factory.mktemp("observed")
    procs = Procs(work)
    try:
        yield _start(work, procs, prometheus)
    finally:
        procs.stop_all()


def _start(work: Path, procs: Procs, prometheus: str) -> Stack:
    (work / "pool.yaml").write_text(POOL)
    (work / "metrics.token").write_text(METRICS_TOKEN + "\n")  # Prometheus' credential: /metrics only
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cli = [sys.executable, "-m", "scheduler.cli.main"]
    procs.start("server", [
        *cli, "server", "--db", f"sqlite:///{work / 'pool.db'}", "--pool", str(work / "pool.yaml"),
        "--port", str(port), "--interval", "0.2", "--sim-duration", "3",
        "--sim-state", str(work / "sim.json"),
    ], env={"TRAINPOOL_ADMIN_TOKEN": ADMIN, "TRAINPOOL_METRICS_TOKEN_FILE": str(work / "metrics.token"),
            "XDG_DATA_HOME": str(work)})  # fmt: skip
    _wait(lambda: httpx.get(f"{url}/readyz", timeout=1).status_code == 200, "server ready")
    admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)

    agent_metrics = []
    for i, node in enumerate(("h100-00", "h100-01")):
        resp = admin.post("/v1/agents/tokens", json={"node": node, "name": "agent"})
        assert resp.status_code == 201, resp.text
        (work / f"{node}.token").write_text(resp.json()["secret"])
        metrics_port = free_port()
        agent_metrics.append(f"127.0.0.1:{metrics_port}")
        procs.start(f"agent-{node}", [
            *cli, "agent", "--server", url, "--node", node, "--token-file", str(work / f"{node}.token"),
            "--address", "127.0.0.1", "--bind", "127.0.0.1", "--probe-port", str(free_port()),
            "--metrics-port", str(metrics_port), "--no-gpu", "--rack", f"rack-{i}",
            "--probe-interval", "0.5", "--report-interval", "1",
        ])  # fmt: skip

    # h100-03 is validated (it passes) before the workload starts.
    assert admin.post("/v1/nodes/h100-03/validate").status_code == 200
    _wait(lambda: admin.get("/v1/nodes/h100-03").json()["validation"] == "passed", "h100-03 validated")

    # A small workload: org b borrows the whole pool (two one-node jobs and an elastic
    # gang of one to two), then org a reclaims its nominal (preemptions; the elastic gang
    # shrinks first, a resize); one job fails once (a restart charged to the job); one on
    # the a100 stops stepping every attempt (hang verdicts, then it fails).
    def submit(
        org: str, env: dict[str, str], replicas: int = 1, least: int | None = None, flavor: str = "h100"
    ) -> None:
        gang = {"flavor": flavor, "accelerators": 8, "replicas": replicas}
        if least is not None:
            gang["min_replicas"] = least
        spec = {"name": "w", "org": org, "gang": gang, "env": env, "restart": {"backoff_seconds": 0}}
        resp = admin.post("/v1/jobs", json={"spec": spec})
        assert resp.status_code == 201, resp.text

    for _ in range(2):
        submit("b", {"SIM_DURATION": "600"})
    submit("b", {"SIM_DURATION": "600"}, replicas=2, least=1)
    _wait(lambda: admin.get("/metrics").text.count("trainpool_running_jobs{") > 0, "b running")
    submit("a", {"SIM_DURATION": "600"})
    submit("a", {"SIM_DURATION": "1", "SIM_FAIL_ATTEMPTS": "1"})
    submit("a", {"SIM_DURATION": "600"})
    submit("b", {"SIM_DURATION": "600"}, replicas=4)  # more than b may have: stays pending
    submit("a", {"SIM_DURATION": "600", "SIM_STEP_SECONDS": "0.2", "SIM_HANG_AFTER": "1",
                 "SIM_HANG_ATTEMPTS": "99"}, flavor="a100")  # fmt: skip

    prom_port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ROOT / "deploy" / "prometheus" / "trainpool-rules.yaml")],
        "scrape_configs": [
            {
                "job_name": "trainpool",
                "authorization": {"credentials_file": str(work / "metrics.token")},
                "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
            },
            {"job_name": "trainpool-agent", "static_configs": [{"targets": agent_metrics}]},
        ],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    procs.start("prometheus", [
        prometheus, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{prom_port}",
    ])  # fmt: skip
    stack = Stack(url, f"http://127.0.0.1:{prom_port}")
    _wait(lambda: httpx.get(f"{stack.prometheus}/-/ready", timeout=1).status_code == 200, "prometheus ready")
    _wait(
        lambda: len([r for r in stack.query("up == 1")["data"]["result"]]) == 3,
        "server and both agents scraped",
    )
    return stack


def _panel_queries(
    dashboards: tuple[DashboardSpec, ...] = DASHBOARDS,
) -> list[tuple[DashboardSpec, str, Query]]:
    return [
        (spec, panel.title, query) for spec in dashboards for panel in spec.panels for query in panel.queries
    ]


def _run_until_data(
    stack: Stack, queries: Mapping[tuple[str, str, str], Query], timeout: float = 60
) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """Runs each (dashboard, panel, expr) until it returns data (or is may_be_empty):
    the series each returned, after asserting none errs and none stays empty."""
    pending = dict(queries)
    errors: list[str] = []
    results: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for key, query in list(pending.items()):
            body = stack.query(key[2])
            if body.get("status") != "success":
                errors.append(f"{key[0]} / {key[1]}: {body.get('error')}")
                del pending[key]
            elif body["data"]["result"] or query.may_be_empty:
                results[key] = body["data"]["result"]
                del pending[key]
        if pending:
            time.sleep(1)
    assert errors == []
    assert sorted(f"{d} / {p}: {e}" for d, p, e in pending) == [], "queries that returned no data"
    return results


def test_every_dashboard_query_runs_and_returns_data(stack: Stack) -> None:
    # Variables at "All", as the dashboards open.
    _run_until_data(stack, {(d.title, p, expand(q.expr, d.all_values())): q for d, p, q in _panel_queries()})
    assert len(_panel_queries()) >= 30


def test_org_dashboard_variables_list_the_pools_orgs_and_flavors(stack: Stack) -> None:
    """Grafana fills ``$org`` and ``$flavor`` from these label_values queries."""
    variables = {v.name: v for v in ORGS.variables}
    assert set(variables) == {"org", "flavor"}

    def listed(name: str, values: Mapping[str, str]) -> set[str]:
        found = re.fullmatch(r"label_values\((.+), (\w+)\)", variables[name].query)
        assert found, variables[name].query
        return stack.label_values(expand(found.group(1), values), found.group(2))

    _wait(lambda: listed("org", {}) == {"a", "b"}, "$org lists a and b", timeout=30)
    assert listed("flavor", {"org": ".*"}) == {"h100", "a100"}
    assert listed("flavor", {"org": "a"}) == {"h100", "a100"}
    assert listed("flavor", {"org": "nobody"}) == set()


def test_org_dashboard_queries_with_one_org_and_flavor_selected(stack: Stack) -> None:
    # b: its jobs started first and one of its gangs never fits, so each panel has data.
    chosen = {"org": "b", "flavor": "h100"}
    results = _run_until_data(
        stack, {(d.title, p, expand(q.expr, chosen)): q for d, p, q in _panel_queries((ORGS,))}
    )
    for (_, panel, _), series in results.items():
        for s in series:
            assert s["metric"].get("org", "b") == "b", f"{panel}: {s['metric']}"
            assert s["metric"].get("flavor", "h100") == "h100", f"{panel}: {s['metric']}"


def test_org_dashboard_usage_and_nominal_are_one_series_per_org_and_flavor(stack: Stack) -> None:
    (panel,) = [p for p in ORGS.panels if p.repeat == "flavor"]
    (used,) = [q for q in panel.queries if not q.dashed]
    (nominal,) = [q for q in panel.queries if q.dashed]

    def series(query: Query, values: Mapping[str, str]) -> dict[tuple[str, str], float]:
        result = stack.query(expand(query.expr, values))["data"]["result"]
        assert all(set(s["metric"]) == {"org", "flavor"} for s in result), result
        return {(s["metric"]["org"], s["metric"]["flavor"]): float(s["value"][1]) for s in result}

    every = ORGS.all_values()
    # b has no a100 quota row: nominal 0, and 0 used, rather than no line.
    assert series(nominal, every) == {
        ("a", "h100"): 16,
        ("a", "a100"): 8,
        ("b", "h100"): 16,
        ("b", "a100"): 0,
    }
    assert set(series(used, every)) == {("a", "h100"), ("a", "a100"), ("b", "h100"), ("b", "a100")}
    assert series(used, every)[("b", "a100")] == 0  # a's hanging job holds the a100
    # One copy of the panel per flavor: the a100 copy shows only a100.
    assert series(nominal, {"org": ".*", "flavor": "a100"}) == {("a", "a100"): 8, ("b", "a100"): 0}
    assert series(nominal, {"org": "(a|b)", "flavor": "h100"}) == {("a", "h100"): 16, ("b", "h100"): 16}


def test_every_alert_expression_evaluates_without_error(stack: Stack) -> None:
    for alert in all_alerts():
        body = stack.query(alert.expr)
        assert body.get("status") == "success", f"{alert.name}: {body.get('error')}"

    def loaded() -> list[dict[str, Any]]:
        groups = httpx.get(f"{stack.prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return (
            rules if len(rules) == len(all_alerts()) and all(r.get("health") == "ok" for r in rules) else []
        )

    rules = _wait(loaded, "every rule evaluated by Prometheus", timeout=30)
    assert {r["name"] for r in rules} == {a.name for a in all_alerts()}
    # A real pool with a leader and cycles: the scheduler alerts must be quiet.
    firing = {r["name"] for r in rules if r["state"] == "firing"}
    assert not firing & {"TrainpoolServerDown", "TrainpoolNoLeader", "TrainpoolLoopStalled"}
