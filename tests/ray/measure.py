"""Measure the ray backend on a local cluster: inventory poll cost, launch to RUNNING,
and node kill (SIGKILL of the raylet and its processes) to gang LOST, over a few trials.

    .venv/bin/python tests/ray/measure.py [trials]

Polls as the control loop does (inventory, then gangs), every 50 ms.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time

from scheduler.backends.base import Launch, Phase
from scheduler.backends.ray import RayBackend
from scheduler.backends.ray.cluster import LocalRayCluster
from values.domain import JobSpec, Node


def until(backend: RayBackend, key: str, phase: Phase, timeout: float = 60.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        backend.inventory(time.time())
        if any(st.key == key and st.phase is phase for st in backend.gangs(time.time())):
            return time.monotonic() - started
        time.sleep(0.05)
    raise SystemExit(f"{key} never reached {phase}")


def main(trials: int) -> None:
    nodes = [Node(name=f"h100-{i:02d}", flavor="h100", accelerators=4) for i in range(4)]
    started = time.monotonic()
    with LocalRayCluster(nodes) as cluster, tempfile.TemporaryDirectory() as state:
        print(f"cluster of {len(nodes)} nodes up in {time.monotonic() - started:.1f}s")
        backend = RayBackend(cluster.address, state_dir=state, workdir=state)
        polls = []
        for _ in range(200):
            backend.inventory(time.time())
            polls.append(backend.inventory_seconds)
        median_ms = statistics.median(polls) * 1000
        print(f"inventory poll (ray.nodes(), {len(nodes)} nodes): median {median_ms:.2f} ms")
        spec = JobSpec.model_validate(
            {"name": "m", "org": "a", "gang": {"replicas": 2, "accelerators": 1, "flavor": "h100"},
             "command": ["sleep", "300"]}
        )  # fmt: skip
        to_running, to_lost = [], []
        for trial in range(trials):
            launch = Launch(f"m{trial}", 0, spec, "h100", (("h100-00", 1), ("h100-03", 1)), {})
            backend.launch(launch, time.time())
            to_running.append(until(backend, launch.key, Phase.RUNNING))
            killed_at = cluster.kill_node("h100-03")
            until(backend, launch.key, Phase.LOST)
            to_lost.append(time.time() - killed_at)
            backend.forget(launch.key)
            cluster.restart_node("h100-03")
            print(f"trial {trial}: launch->RUNNING {to_running[-1]:.2f}s, kill->LOST {to_lost[-1]:.2f}s")
        print(f"launch->RUNNING median {statistics.median(to_running):.2f}s, max {max(to_running):.2f}s")
        print(f"kill->LOST      median {statistics.median(to_lost):.2f}s, max {max(to_lost):.2f}s")
        backend.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
