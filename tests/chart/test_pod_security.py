"""The chart's pods against the Pod Security Standards: the server passes `restricted`
with defaults and with every feature on; the agent's only exceptions are the documented
ones (the host network, for probes that measure the node's own links)."""

from __future__ import annotations

from typing import Any

import pytest
from chart.pod_security import restricted
from chart.test_chart import ALL_ON, render

pytestmark = pytest.mark.integration  # a real helm binary

WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")


def _pods(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        f"{d['kind']}/{d['metadata']['name']}": d["spec"]["template"]["spec"]
        for d in docs
        if d["kind"] in WORKLOADS
    }


@pytest.mark.parametrize("values", [(), ("-f", str(ALL_ON))], ids=["defaults", "every-feature-on"])
def test_server_is_restricted_and_agent_exceptions_are_only_the_documented_ones(
    values: tuple[str, ...],
) -> None:
    pods = _pods(render(*values))
    servers = {k: v for k, v in pods.items() if "agent" not in k}
    agents = {k: v for k, v in pods.items() if "agent" in k}
    assert servers and agents
    for name, pod in servers.items():
        assert restricted(pod) == [], name
    for name, pod in agents.items():
        assert restricted(pod) == ["host namespaces: hostNetwork"], name


def test_the_checker_refuses_what_restricted_forbids() -> None:
    pod = {
        "hostPID": True,
        "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
        "containers": [
            {"name": "c", "securityContext": {"privileged": True, "capabilities": {"add": ["SYS_ADMIN"]}}}
        ],
    }
    found = restricted(pod)
    for expected in (
        "host namespaces: hostPID",
        "hostPath volume root",
        "c: privileged",
        "c: capabilities beyond baseline ['SYS_ADMIN']",
        "c: allowPrivilegeEscalation is not false",
        "c: runAsNonRoot is not true",
        "c: capabilities must drop ALL",
    ):
        assert expected in found
