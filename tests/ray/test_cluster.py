"""LocalRayCluster leaves nothing behind when the process that hosts it ends: normally
(interpreter exit, without stop()) or killed outright (SIGKILL), with a gang running."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from ray_helpers import is_alive, processes_mentioning

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOST = """
import json, os, signal, sys, time
from scheduler.backends.base import Launch, Phase
from scheduler.backends.ray import RayBackend
from scheduler.backends.ray.cluster import LocalRayCluster
from values.domain import JobSpec, Node

how, marker, state = sys.argv[1:4]
cluster = LocalRayCluster([Node(name="h100-00", flavor="h100", accelerators=2)]).start()
backend = RayBackend(cluster.address, state_dir=state, workdir=state, namespace="host-test")
spec = JobSpec.model_validate({"name": "t", "org": "a", "gang": {"replicas": 2, "flavor": "h100"},
                               "command": ["python", "-c", "import time; time.sleep(300)", marker]})
backend.launch(Launch("host", 0, spec, "h100", (("h100-00", 2),), {}), time.time())
while not any(st.phase is Phase.RUNNING for st in backend.gangs(time.time())):
    time.sleep(0.1)
print(json.dumps({"pids": cluster.pids(), "temp": cluster._temp}), flush=True)
if how == "sigkill":
    os.kill(os.getpid(), signal.SIGKILL)
sys.exit(0)  # no stop(), no close(): atexit must do it
"""


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_the_hosting_process_ending_takes_the_whole_cluster_with_it(how: str, tmp_path: Path) -> None:
    marker = "host-" + uuid.uuid4().hex[:8]
    proc = subprocess.run(
        [sys.executable, "-c", HOST, how, marker, str(tmp_path)], capture_output=True, timeout=120
    )
    lines = [line for line in proc.stdout.decode().splitlines() if line.startswith("{")]
    assert lines, proc.stderr.decode()[-2000:]
    started = json.loads(lines[-1])
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        left = [pid for pid in started["pids"] if is_alive(pid)] + processes_mentioning(marker)
        if not left and not processes_mentioning(started["temp"]):
            break
        time.sleep(0.2)
    assert [pid for pid in started["pids"] if is_alive(pid)] == []
    assert processes_mentioning(marker) == []  # the jobs went with their nodes
    assert processes_mentioning(started["temp"]) == []
    deadline = time.monotonic() + 10
    while Path(started["temp"]).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not Path(started["temp"]).exists()
