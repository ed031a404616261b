"""Run by ``test_memory_monitor.py`` in a process of its own: a one-node local Ray
cluster whose memory monitor finds the node always short of memory (its threshold at 1%
of the machine's memory), so it kills the worker of whatever runs; a one-replica gang on
it. Prints the gang's final status as JSON."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.update(RAY_memory_usage_threshold="0.01", RAY_memory_monitor_refresh_ms="100")

from scheduler.backends.base import FINISHED, Launch
from scheduler.backends.ray import RayBackend
from scheduler.backends.ray.cluster import LocalRayCluster
from values.domain import Gang, JobSpec, Node


def main() -> int:
    node = Node(name="m-00", flavor="h100", accelerators=1, cpu=2, memory_gb=8)
    work = Path(tempfile.mkdtemp(prefix="trainpool-mm-"))
    with LocalRayCluster([node]) as cluster:
        backend = RayBackend(cluster.address, state_dir=work / "state", workdir=work, namespace="mm")
        hungry = ("python", "-c", "import time; x = bytearray(200 << 20); time.sleep(120)")
        gang = Gang(replicas=1, accelerators=1, flavors=("h100",))
        spec = JobSpec(name="hungry", org="a", gang=gang, command=hungry)
        launch = Launch("j-oom", 0, spec, "h100", (("m-00", 1),), {"TRAINPOOL_JOB_ID": "j-oom"})
        backend.launch(launch, time.time())
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            (st,) = backend.gangs(time.time())
            if st.phase in FINISHED:
                print(json.dumps({"phase": st.phase.value, "exit_code": st.exit_code, "message": st.message}))
                backend.forget(st.key)
                backend.close()
                return 0
            time.sleep(0.5)
        print(json.dumps({"phase": st.phase.value, "message": "did not end in 120 s"}))
        return 1


if __name__ == "__main__":
    sys.exit(main())
