"""End to end with the Ray backend: Ray worker nodes inside the namespaces (one per rack),
the head and the server in the spine's namespace, an agent beside each Ray node. A gang
runs the example worker (it checkpoints and saves on SIGTERM); the node it runs on gets
+150 ms on everything it sends (NFQUEUE); the node turns unhealthy, the gang is asked to
stop (SIGTERM, grace period), saves, and resumes from that checkpoint on another node.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .lab import PY, ROOT, UPLINK_SPINE, Lab, cleanup_all, exclusive, free_port
from .test_network_faults import HEALTH, _can_run, figure, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_health_check_initial_delay_ms": "500",
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "500",
    "RAY_health_check_failure_threshold": "3",
    # A job's `python` is this environment's.
    "PATH": str(Path(PY).parent) + os.pathsep + os.environ.get("PATH", ""),
}


@pytest.fixture(scope="module")
def ray_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    reason = _can_run()
    if reason:
        pytest.skip(reason)
    pytest.importorskip("ray")
    with exclusive():
        cleanup_all()
        yield from _ray_lab(tmp_path_factory.mktemp("netns-ray"))


def _ray_lab(workdir: Path) -> Iterator[Lab]:
    gcs = f"{UPLINK_SPINE}:{free_port()}"
    lab = Lab(workdir, racks=3, per_rack=1, health=HEALTH, port=free_port(), server_host=UPLINK_SPINE)
    lab.server_ns = lab.spine
    lab.server_args = ["--backend", "ray", "--address", gcs, "--backend-opt", f"workdir={ROOT}",
                       "--checkpoint-root", str(workdir / "checkpoints")]  # fmt: skip
    temp = Path(f"/tmp/{lab.prefix}r")  # short: Ray's socket paths must fit 107 bytes
    lab.dirs.append(temp)
    node = [PY, str(Path(__file__).parent / "ray_node.py"), "--temp", str(temp)]
    try:
        lab.build()
        head = [*node, "--head", "--ip", UPLINK_SPINE, "--port", gcs.split(":")[1]]
        lab._spawn(lab.spine, head, "ray-head", RAY_ENV)
        _up(lab, "ray-head")
        for h in lab.hosts:  # one at a time: nodes starting together time out on this machine
            worker = [*node, "--ip", h.ip, "--gcs", gcs, "--node", h.name, "--rack", lab.rack_name(h.rack),
                      "--spine", "h-s0"]  # fmt: skip
            lab._spawn(h.ns, worker, f"ray-{h.name}", RAY_ENV)
            _up(lab, f"ray-{h.name}")
        lab.start_server()
        wait_for(lambda: len(lab.api("GET", "/v1/nodes")) == 3, 60, "the server sees the Ray nodes")
        for h in lab.hosts:
            lab.start_agent(h.name)
        wait_for(
            lambda: all(a["last_seq"] >= 3 for a in lab.api("GET", "/v1/agents")), 60, "agents reporting"
        )
        yield lab
    finally:
        lab.teardown()


def _up(lab: Lab, log: str, timeout: float = 90) -> None:
    path = lab.workdir / f"{log}.log"
    wait_for(lambda: path.exists() and "ray node up" in path.read_text(), timeout, f"{log} started")


def test_a_gang_on_a_node_that_turns_unhealthy_checkpoints_and_resumes_elsewhere(ray_lab: Lab) -> None:
    lab = ray_lab
    member = lab.api("POST", "/v1/tokens", {"role": "member", "org": "a", "name": "t"})["secret"]
    spec = {
        "name": "steady", "org": "a", "gang": {"flavor": "h100", "accelerators": 8},
        "command": ["python", "examples/train/steady_worker.py", "--step-seconds", "0.2",
                    "--checkpoint-every", "5"],
        "grace_period_seconds": 10,
    }  # fmt: skip
    job = lab.api("POST", "/v1/jobs", {"spec": spec}, token=member)

    def current() -> dict[str, Any]:
        return dict(lab.api("GET", f"/v1/jobs/{job['id']}", token=member))

    def log(attempt: int) -> str:
        return "\n".join(
            lab.api("GET", f"/v1/jobs/{job['id']}/logs?attempt={attempt}", token=member)["lines"]
        )

    wait_for(lambda: current()["state"] == "RUNNING" and "step 6" in log(0), 60, "the gang running")
    sick = current()["allocation"]["nodes"][0]["node"]
    delay = lab.delayed_node(sick, 150)
    injected = time.monotonic()
    try:
        wait_for(lambda: lab.states()[sick] == "unhealthy", 60, f"{sick} unhealthy")
        figure("ray: node +150 ms -> unhealthy", time.monotonic() - injected)
        wait_for(
            lambda: current()["attempt"] >= 1 and current()["state"] == "RUNNING", 60, "gang running again"
        )
        wait_for(lambda: "resumed from step" in log(1), 30, "the new attempt resumed")
        figure("ray: node +150 ms -> gang resumed elsewhere", time.monotonic() - injected)
    finally:
        lab.flush(lab.host(sick).ns)
        delay.terminate()
        delay.wait()
    first, second = log(0), log(1)
    assert "stopping on SIGTERM" in first  # it was asked to stop and saved on the way out
    saved = int(first.rsplit("checkpoint step ", 1)[1].split()[0])
    assert f"resumed from step {saved}" in second  # from the checkpoint saved on SIGTERM
    moved = current()
    assert moved["restarts"] == 0 and moved["allocation"]["nodes"][0]["node"] != sick
    events = lab.api("GET", f"/v1/jobs/{job['id']}/events", token=member)
    assert [e["reason"] for e in events if e["event"] == "preempt"] == ["health"]
    assert 'trainpool_jobs_moved_total{org="a",reason="health"} 1.0' in lab.api_text("/metrics")
    lab.api("POST", f"/v1/jobs/{job['id']}/cancel", token=member)
