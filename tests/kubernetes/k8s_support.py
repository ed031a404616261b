"""What the backend tests do as kubelet and as cluster operator, over the official client."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes import client

T = TypeVar("T")
NS = "pool"


class CoreApi(client.CoreV1Api):  # type: ignore[misc]
    """The client plus what the tests do as kubelet and as cluster operator."""

    def add_node(
        self, name: str, *, gpus: int = 8, resource: str = "nvidia.com/gpu",
        labels: dict[str, str] | None = None, ready: bool = True, unschedulable: bool = False,
    ) -> None:  # fmt: skip
        self.create_node(
            {
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {"trainpool.io/flavor": "h100", **(labels or {})}},
                "spec": {"unschedulable": unschedulable},
                "status": {
                    "allocatable": {resource: str(gpus), "cpu": "96", "memory": "1Ti"},
                    "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                },
            }
        )  # fmt: skip

    def set_ready(self, name: str, ready: bool) -> None:
        cond = {"type": "Ready", "status": str(ready)}
        self.patch_node_status(name, {"status": {"conditions": [cond]}}, _preload_content=False)

    def pods(self) -> list[dict[str, Any]]:
        resp = self.list_namespaced_pod(NS, _preload_content=False)
        return sorted(json.loads(resp.data)["items"], key=lambda p: p["metadata"]["name"])

    def services(self) -> list[str]:
        return sorted(s.metadata.name for s in self.list_namespaced_service(NS).items)

    def run_pod(self, name: str) -> None:
        self.patch_namespaced_pod_status(name, NS, {"status": {"phase": "Running"}}, _preload_content=False)

    def exit_pod(self, name: str, code: int) -> None:
        term = {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}}
        status = {
            "phase": "Succeeded" if code == 0 else "Failed",
            "containerStatuses": [{"name": "train", "state": term}],
        }
        self.patch_namespaced_pod_status(name, NS, {"status": status}, _preload_content=False)

    def evict_pod(self, name: str) -> None:
        status = {"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."}
        self.patch_namespaced_pod_status(name, NS, {"status": status}, _preload_content=False)


def eventually(check: Callable[[], T], timeout: float = 15.0, what: str = "condition") -> T:
    """Poll until check() returns something truthy (watches are asynchronous)."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached in {timeout}s (last: {last!r})")
