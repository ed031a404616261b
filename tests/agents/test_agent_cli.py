"""`trainpool agent`, `tokens create --role agent`, `nodes describe` against a live server
on loopback: a real agent process registers, probes and reports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from service.api_harness import Api, make_api  # tests/ is on sys.path (rootdir conftest)
from service.conftest import free_port
from typer.testing import CliRunner

from agents.config import AgentConfigError, load_config
from scheduler.cli.main import app
from scheduler.health.service import HealthService
from scheduler.health.thresholds import load_thresholds

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Api, str]]:
    api = make_api(f"sqlite:///{tmp_path_factory.mktemp('agent-cli') / 'pool.db'}")
    api.clock.t = time.time()  # agents stamp reports with the real clock
    api.cycle()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(api.client.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    # The health evaluation, as the composition root runs it beside the loop.
    health = HealthService(api.ctx.db, load_thresholds(), is_leader=lambda: api.host.loop.is_leader)
    stop_health = threading.Event()
    health_thread = threading.Thread(target=health.run, args=(stop_health,), daemon=True)
    health_thread.start()
    while not server.started:
        time.sleep(0.05)
    yield api, f"http://127.0.0.1:{port}"
    server.should_exit = True
    stop_health.set()
    thread.join(timeout=10)
    health_thread.join(timeout=10)


def cli(url: str, token: str, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"TRAINPOOL_URL": url, "TRAINPOOL_TOKEN": token})
    return result.exit_code, result.output


@pytest.mark.slow
def test_an_agent_registers_reports_and_its_node_shows_the_verdict(
    live: tuple[Api, str], tmp_path: Path
) -> None:
    api, url = live
    code, out = cli(url, api.tokens["pool-admin"], "tokens", "create", "--role", "agent", "--node", "h100-01",
                    "-o", "json")  # fmt: skip
    assert code == 0, out
    secret = json.loads(out)["secret"]
    assert secret.startswith("tpa_")
    port = free_port()
    env = {**os.environ, "TRAINPOOL_AGENT_TOKEN": secret}
    cmd = [sys.executable, "-m", "scheduler.cli.main", "agent", "--server", url, "--node", "h100-01",
           "--address", "127.0.0.1", "--bind", "127.0.0.1", "--probe-port", str(port), "--metrics-port", "0",
           "--report-interval", "0.5", "--no-gpu"]  # fmt: skip
    log = tmp_path / "agent.log"
    with open(log, "wb") as out_file:
        proc = subprocess.Popen(cmd, stdout=out_file, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            agents = api.call("pool-admin", "GET", "/v1/agents").json()
            if agents and agents[0]["last_seq"] >= 2:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"no reports; agent log:\n{log.read_text()}")
        assert agents[0]["node"] == "h100-01" and agents[0]["probe_port"] == port
        api.clock.t = time.time()
        time.sleep(1.5)  # the health thread evaluates
        code, out = cli(url, api.tokens["member@a"], "nodes", "describe", "h100-01", "-o", "json")
        assert code == 0, out
        described = json.loads(out)
        assert described["agent_health"]["verdict"]["state"] == "healthy"
        assert described["agent_health"]["agent"]["last_seq"] >= 2
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    assert "GPU probe: disabled" in log.read_text()  # said once, at start
    assert proc.returncode == 0


def test_a_node_without_an_agent_describes_without_a_verdict(live: tuple[Api, str]) -> None:
    api, url = live
    code, out = cli(url, api.tokens["member@a"], "nodes", "describe", "h100-03", "-o", "json")
    assert code == 0 and json.loads(out)["agent_health"] is None


def test_an_agent_with_a_refused_token_says_so_and_exits(live: tuple[Api, str]) -> None:
    _, url = live
    args = ["agent", "--server", url, "--node", "h100-02", "--probe-port", str(free_port()),
            "--metrics-port", "0", "--bind", "127.0.0.1", "--no-gpu"]  # fmt: skip
    result = runner.invoke(app, args, env={"TRAINPOOL_AGENT_TOKEN": "tpa_not-a-token"})
    assert result.exit_code == 1 and "refused" in result.output


def test_agent_settings_flags_over_environment_over_file_and_errors_name_the_field(tmp_path: Path) -> None:
    file = tmp_path / "agent.yaml"
    file.write_text("rack: r-file\nspine: s-file\nprobe-port: 9000\n")
    cfg = load_config(
        {"rack": "r-flag"}, file, env={"TRAINPOOL_AGENT_SPINE": "s-env", "TRAINPOOL_AGENT_NODE": "n1"}
    )
    assert (cfg.rack, cfg.spine, cfg.probe_port, cfg.node) == ("r-flag", "s-env", 9000, "n1")
    with pytest.raises(AgentConfigError, match=r"probe_port.*TRAINPOOL_AGENT_PROBE_PORT"):
        load_config({}, None, env={"TRAINPOOL_AGENT_PROBE_PORT": "70000"})
    with pytest.raises(AgentConfigError, match=r"rack.*--rack"):
        load_config({"rack": "Not A Name"}, None, env={})
    with pytest.raises(AgentConfigError, match="racks"):
        file.write_text("racks: r1\n")
        load_config({}, file, env={})
    result = runner.invoke(app, ["agent", "--probe-port", "0"], env={})
    assert result.exit_code == 2 and "probe_port" in result.output
