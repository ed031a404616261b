"""Helpers for the ray backend's tests: polling as the loop does, finding processes."""

from __future__ import annotations

import os
import time

from scheduler.backends.base import GangStatus, Phase
from scheduler.backends.ray.cluster import process_alive
from values.domain import Node, TopologyPath

NAMESPACE = "trainpool-test"
NODES = [
    Node(name=f"h100-{i:02d}", flavor="h100", accelerators=4, cpu=16, memory_gb=64,
         topology=TopologyPath(spine="spine-0", rack=f"rack-{i // 2}"))
    for i in range(4)
]  # fmt: skip
# Ascend nodes show that the flavor's own visibility variable reaches the replicas.
ASCEND = Node(name="ascend-00", flavor="ascend-910b", accelerators=2, topology=TopologyPath(rack="rack-1"))


def py(code: str, marker: str) -> tuple[str, ...]:
    """A job command: Python code, with a marker argument to find its process by."""
    return ("python", "-c", code, marker)


def wait_for(
    backend: object, key: str, phases: set[Phase], timeout: float = 60.0
) -> tuple[GangStatus, float]:
    """Poll as the loop does (inventory, then gangs) until the gang reaches one of
    ``phases``; returns its status and the seconds it took."""
    started = time.monotonic()
    last = None
    while time.monotonic() - started < timeout:
        backend.inventory(time.time())  # type: ignore[attr-defined]
        for st in backend.gangs(time.time()):  # type: ignore[attr-defined]
            if st.key == key:
                last = st
                if st.phase in phases:
                    return st, time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"gang {key} did not reach {sorted(phases)} in {timeout}s (last: {last})")


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
        except OSError:
            continue
        if text in cmd and is_alive(int(entry)):
            found.append(int(entry))
    return found


is_alive = process_alive
