"""The ray backend on a real local Ray cluster: gangs start where the core placed them,
with the environment training code needs; exits, losses and stops become phases; and
nothing is left behind."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from ray_helpers import ASCEND, NAMESPACE, NODES, processes_mentioning, py, wait_for

from scheduler.backends.base import BackendError, Launch, Phase
from scheduler.backends.registry import BackendSettings, build_backend
from scheduler.config import PoolConfig
from values.domain import Health, JobSpec, Node, TopologyPath

# One group: under `pytest -n N --dist loadgroup` these share one worker, hence one cluster.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("ray")]

RUNNING_OR_DONE = {Phase.RUNNING, Phase.SUCCEEDED, Phase.FAILED, Phase.LOST}

PRINT_ENV = """
import json, os, sys, time
keys = ["RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
        "CUDA_VISIBLE_DEVICES", "TRAINPOOL_JOB_ID", "TRAINPOOL_ATTEMPT", "TRAINPOOL_CHECKPOINT_DIR",
        "TRAINPOOL_RESUME_FROM", "TRAINPOOL_NODE", "JOB_VAR", "RAY_JOB_ID", "RAY_RAYLET_PID"]
print(json.dumps({k: os.environ.get(k) for k in keys}))
time.sleep(float(os.environ.get("SLEEP", "0")))
"""


def gang(
    job: str,
    command: tuple[str, ...],
    assignments: tuple[tuple[str, int], ...],
    accelerators: int = 1,
    env: dict[str, str] | None = None,
    grace: float = 30.0,
    flavor: str = "h100",
) -> Launch:
    replicas = sum(n for _, n in assignments)
    shape = {"replicas": replicas, "accelerators": accelerators, "flavor": flavor}
    spec = JobSpec.model_validate(
        {"name": "t", "org": "a", "gang": shape, "command": command, "env": env or {},
         "grace_period_seconds": grace}
    )  # fmt: skip
    pool_env = {
        "TRAINPOOL_JOB_ID": job,
        "TRAINPOOL_ATTEMPT": "0",
        "TRAINPOOL_CHECKPOINT_DIR": f"checkpoints/{job}",
        "TRAINPOOL_RESUME_FROM": f"checkpoints/{job}/step-7",
    }
    return Launch(job, 0, spec, flavor, assignments, pool_env)


def job_id() -> str:
    return "j-" + uuid.uuid4().hex[:8]


def test_inventory_comes_from_the_node_labels(make_backend: Callable[..., object]) -> None:
    backend = make_backend()
    started = time.perf_counter()
    for _ in range(100):
        nodes = {n.name: n for n in backend.inventory(time.time())}
    per_poll = (time.perf_counter() - started) / 100
    print(f"\ninventory poll: {per_poll * 1000:.2f} ms ({len(nodes)} pool nodes)")
    for want in [*NODES, ASCEND]:
        assert nodes[want.name] == want  # flavor, accelerators, cpu, memory, topology; healthy
    assert not any(n.startswith("ray-") for n in nodes)  # the head node is not a pool node


def test_a_gang_runs_on_the_chosen_nodes_with_its_environment(
    ray_cluster: object, make_backend: Callable[..., object], tmp_path: Path
) -> None:
    backend = make_backend()
    job = job_id()
    launch = gang(job, py(PRINT_ENV, job), (("h100-01", 2), ("h100-02", 1)), accelerators=2,
                  env={"JOB_VAR": "x", "SLEEP": "2"})  # fmt: skip
    backend.launch(launch, time.time())
    backend.launch(launch, time.time())  # idempotent by key
    status, to_running = wait_for(backend, launch.key, RUNNING_OR_DONE)
    print(f"\nlaunch to RUNNING: {to_running:.2f}s (3 replicas on 2 nodes)")
    assert status.phase is Phase.RUNNING
    status, _ = wait_for(backend, launch.key, {Phase.SUCCEEDED, Phase.FAILED, Phase.LOST})
    assert (status.phase, status.exit_code) == (Phase.SUCCEEDED, 0)

    ids = ray_cluster.node_ids  # type: ignore[attr-defined]
    record = backend._gangs[launch.key]  # type: ignore[attr-defined]
    assert record.placed == {0: ids["h100-01"], 1: ids["h100-01"], 2: ids["h100-02"]}
    envs = [json.loads(backend.logs(launch.key, 10, time.time(), replica=r)[0]) for r in range(3)]
    assert [e["RANK"] for e in envs] == ["0", "1", "2"]
    assert {e["WORLD_SIZE"] for e in envs} == {"3"}
    assert [(e["LOCAL_RANK"], e["LOCAL_WORLD_SIZE"]) for e in envs] == [("0", "2"), ("1", "2"), ("0", "1")]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0,1", "2,3", "0,1"]
    assert [e["TRAINPOOL_NODE"] for e in envs] == ["h100-01", "h100-01", "h100-02"]
    assert len({(e["MASTER_ADDR"], e["MASTER_PORT"]) for e in envs}) == 1
    assert envs[0]["MASTER_ADDR"] == "127.0.0.1" and int(envs[0]["MASTER_PORT"]) > 0
    for e in envs:
        assert (e["TRAINPOOL_JOB_ID"], e["TRAINPOOL_ATTEMPT"], e["JOB_VAR"]) == (job, "0", "x")
        assert e["TRAINPOOL_CHECKPOINT_DIR"] == f"checkpoints/{job}"
        assert e["TRAINPOOL_RESUME_FROM"] == f"checkpoints/{job}/step-7"
        assert e["RAY_JOB_ID"] is None and e["RAY_RAYLET_PID"] is None  # the job is not a Ray worker
    every = backend.logs(launch.key, 10, time.time())
    assert [line.split("] ")[0] for line in every] == ["[rank 0", "[rank 1", "[rank 2"]
    assert (tmp_path / "state" / "ray-logs" / job / "0" / "rank-2.log").exists()
    backend.forget(launch.key)
    assert backend.gangs(time.time()) == []
    assert backend.logs(launch.key, 10, time.time(), replica=1)  # kept after the gang is gone


def test_the_server_builds_the_backend_from_its_pool_config(
    ray_cluster: object, small_pool: PoolConfig, tmp_path: Path
) -> None:
    settings = BackendSettings(
        config=small_pool, address=ray_cluster.address, state_dir=tmp_path,  # type: ignore[attr-defined]
        options={"namespace": NAMESPACE, "workdir": str(tmp_path)},
    )  # fmt: skip
    backend = build_backend("ray", settings)
    try:
        job = job_id()
        code = (
            "import os; e = os.environ; print(e['ASCEND_RT_VISIBLE_DEVICES'], e.get('CUDA_VISIBLE_DEVICES'))"
        )
        launch = gang(job, py(code, job), ((ASCEND.name, 1),), accelerators=2, flavor=ASCEND.flavor)
        backend.launch(launch, time.time())
        status, _ = wait_for(backend, launch.key, {Phase.SUCCEEDED, Phase.FAILED, Phase.LOST})
        assert status.phase is Phase.SUCCEEDED
        assert backend.logs(launch.key, 5, time.time(), replica=0) == ["0,1 None"]
        with pytest.raises(BackendError, match="flavor 'ascend-910b', not 'h100'"):
            backend.launch(gang(job_id(), ("true",), ((ASCEND.name, 1),)), time.time())
        with pytest.raises(BackendError, match="not in the Ray cluster"):
            backend.launch(gang(job_id(), ("true",), (("h100-77", 1),)), time.time())
        backend.forget(launch.key)
    finally:
        backend.close()
    bad = dataclasses.replace(settings, options={"start_timeout": "soon"})
    with pytest.raises(ValueError, match="start_timeout: 'soon' is not a number"):
        build_backend("ray", bad)


def test_a_non_zero_exit_fails_the_gang_and_stops_the_other_replicas(
    make_backend: Callable[..., object],
) -> None:
    backend = make_backend()
    job = job_id()
    code = "import os, sys, time\nif os.environ['RANK'] == '1': sys.exit(3)\ntime.sleep(120)"
    launch = gang(job, py(code, job), (("h100-00", 1), ("h100-03", 1)))
    backend.launch(launch, time.time())
    status, _ = wait_for(backend, launch.key, {Phase.FAILED, Phase.SUCCEEDED, Phase.LOST})
    assert (status.phase, status.exit_code, status.node) == (Phase.FAILED, 3, "h100-03")
    assert "rank 1" in status.message
    deadline = time.monotonic() + 15
    while processes_mentioning(job) and time.monotonic() < deadline:
        backend.gangs(time.time())
        time.sleep(0.1)
    assert processes_mentioning(job) == []  # rank 0 was stopped with its gang
    backend.forget(launch.key)


def test_a_job_that_cannot_start_fails_as_its_own_fault(make_backend: Callable[..., object]) -> None:
    backend = make_backend()
    launch = gang(job_id(), ("/no/such/program",), (("h100-00", 1),))
    backend.launch(launch, time.time())
    status, _ = wait_for(backend, launch.key, {Phase.FAILED, Phase.SUCCEEDED, Phase.LOST})
    assert (status.phase, status.exit_code) == (Phase.FAILED, 127)
    assert "cannot start" in backend.logs(launch.key, 5, time.time(), replica=0)[0]
    backend.forget(launch.key)


TRAPS_SIGTERM = """
import os, signal, sys, time
def bye(*_):
    open(os.environ["OUT"] + "." + os.environ["RANK"], "w").write("saved")
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
print("ready", flush=True)
time.sleep(120)
"""

IGNORES_SIGTERM = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(120)
"""


def wait_ready(backend: object, key: str, replicas: int) -> None:
    """Until every replica printed "ready" (its signal handler is installed)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        lines = backend.logs(key, 5, time.time()) or []  # type: ignore[attr-defined]
        if sum(line.endswith("ready") for line in lines) >= replicas:
            return
        time.sleep(0.1)
    raise AssertionError(f"{key} never became ready")


def test_stop_with_grace_lets_the_job_save_and_leaves_nothing_behind(
    make_backend: Callable[..., object], tmp_path: Path
) -> None:
    import ray

    backend = make_backend()
    job = job_id()
    out = tmp_path / "saved"
    launch = gang(job, py(TRAPS_SIGTERM, job), (("h100-00", 1), ("h100-01", 1)), env={"OUT": str(out)})
    backend.launch(launch, time.time())
    wait_for(backend, launch.key, {Phase.RUNNING})
    wait_ready(backend, launch.key, 2)
    backend.stop(launch.key, 20.0, time.time())
    backend.stop(launch.key, 20.0, time.time())  # idempotent
    backend.stop("no-such/0", 1.0, time.time())  # unknown keys are ignored
    status, took = wait_for(backend, launch.key, {Phase.STOPPED, Phase.SUCCEEDED, Phase.FAILED, Phase.LOST})
    assert status.phase is Phase.STOPPED
    assert took < 10, "the job exited on SIGTERM; the backend must not wait out the grace period"
    assert (tmp_path / "saved.0").read_text() == "saved" and (tmp_path / "saved.1").read_text() == "saved"
    backend.forget(launch.key)
    assert processes_mentioning(job) == []
    assert not [a for a in ray.util.list_named_actors(all_namespaces=True) if job in a["name"]]
    groups = ray.util.placement_group_table().values()
    assert all(g["state"] == "REMOVED" for g in groups if job in (g["name"] or ""))


def test_a_job_that_ignores_sigterm_is_killed_after_its_grace(make_backend: Callable[..., object]) -> None:
    backend = make_backend()
    job = job_id()
    launch = gang(job, py(IGNORES_SIGTERM, job), (("h100-02", 1),))
    backend.launch(launch, time.time())
    wait_for(backend, launch.key, {Phase.RUNNING})
    wait_ready(backend, launch.key, 1)
    backend.stop(launch.key, 1.5, time.time())
    assert processes_mentioning(job), "still in its grace period"
    _, took = wait_for(backend, launch.key, {Phase.STOPPED})
    assert took >= 1.4
    assert processes_mentioning(job) == []
    backend.forget(launch.key)


def test_a_gang_stopped_before_it_started_never_starts(make_backend: Callable[..., object]) -> None:
    backend = make_backend()
    job = job_id()
    launch = gang(job, py("import time; time.sleep(120)", job), (("h100-03", 2),))
    backend.launch(launch, time.time())
    backend.stop(launch.key, 5.0, time.time())
    wait_for(backend, launch.key, {Phase.STOPPED})
    time.sleep(0.5)
    assert processes_mentioning(job) == []
    backend.forget(launch.key)


# A server that launches two gangs, sees one finish, and dies without closing anything.
CRASHING_SERVER = """
import os, sys, time
sys.path.insert(0, sys.argv[5])
from ray_helpers import py
from test_backend import gang
from scheduler.backends.base import Phase
from scheduler.backends.ray import RayBackend

address, namespace, state, running, done = sys.argv[1:5] + [sys.argv[6]]
backend = RayBackend(address, namespace=namespace, state_dir=state, workdir=state)
long = gang(running, py("import time; time.sleep(120)", running), (("h100-00", 1), ("h100-02", 1)))
short = gang(done, py("print('bye')", done), (("h100-01", 1),))
backend.launch(long, time.time())
backend.launch(short, time.time())
deadline = time.time() + 60
while time.time() < deadline:
    phases = {st.key: st.phase for st in backend.gangs(time.time())}
    if phases.get(long.key) is Phase.RUNNING and phases.get(short.key) is Phase.SUCCEEDED:
        print("ready", flush=True)
        os._exit(0)
    time.sleep(0.1)
os._exit(1)
"""


def test_after_a_server_crash_a_new_backend_finds_running_and_finished_gangs(
    ray_cluster: object, make_backend: Callable[..., object], tmp_path: Path
) -> None:
    running, done = job_id(), job_id()
    here = str(Path(__file__).parent)
    args = [ray_cluster.address, NAMESPACE, str(tmp_path / "state"), running, here, done]  # type: ignore[attr-defined]
    crashed = subprocess.run([sys.executable, "-c", CRASHING_SERVER, *args], capture_output=True, timeout=120)
    assert crashed.returncode == 0, crashed.stderr.decode()[-2000:]

    backend = make_backend()
    seen = {st.key: st for st in backend.gangs(time.time())}
    assert seen[f"{done}/0"].phase is Phase.SUCCEEDED
    wait_for(backend, f"{running}/0", {Phase.RUNNING})
    long = gang(running, py("import time; time.sleep(120)", running), (("h100-00", 1), ("h100-02", 1)))
    backend.launch(long, time.time())  # a relaunch by the new server adopts, never duplicates
    assert len(processes_mentioning(running)) == 2
    assert backend.logs(f"{done}/0", 5, time.time()) == ["[rank 0] bye"]
    backend.stop(long.key, 0.0, time.time())
    wait_for(backend, long.key, {Phase.STOPPED})
    backend.forget(long.key)
    backend.forget(f"{done}/0")
    assert processes_mentioning(running) == []


def test_killing_a_node_loses_the_gang_within_seconds(
    ray_cluster: object, make_backend: Callable[..., object]
) -> None:
    cluster = ray_cluster
    victim = Node(name="h100-doomed", flavor="h100", accelerators=2, topology=TopologyPath(rack="rack-9"))
    cluster.add_node(victim)  # type: ignore[attr-defined]
    backend = make_backend()
    assert victim.name in {n.name for n in backend.inventory(time.time())}  # a node added is seen
    job = job_id()
    launch = gang(job, py("import time; time.sleep(120)", job), (("h100-00", 1), (victim.name, 1)))
    backend.launch(launch, time.time())
    wait_for(backend, launch.key, {Phase.RUNNING})
    killed_at = cluster.kill_node(victim.name)  # type: ignore[attr-defined]
    status, _ = wait_for(backend, launch.key, {Phase.LOST, Phase.FAILED, Phase.SUCCEEDED}, timeout=30)
    detection = time.time() - killed_at
    print(f"\nnode killed -> gang LOST seen: {detection:.2f}s")
    assert (status.phase, status.node) == (Phase.LOST, victim.name)
    assert detection < 6.0, f"loss seen after {detection:.1f}s (target 3s)"
    health = {n.name: n.health for n in backend.inventory(time.time())}
    assert health[victim.name] is Health.UNHEALTHY
    deadline = time.monotonic() + 15
    while processes_mentioning(job) and time.monotonic() < deadline:
        backend.gangs(time.time())
        time.sleep(0.1)
    assert processes_mentioning(job) == []  # the survivor on h100-00 was stopped too
    backend.forget(launch.key)
    wait_gone(backend, launch.key)
    # The node comes back under its name, healthy.
    cluster.restart_node(victim.name)  # type: ignore[attr-defined]
    health = {n.name: n.health for n in backend.inventory(time.time())}
    assert health[victim.name] is Health.HEALTHY
    cluster.kill_node(victim.name)  # type: ignore[attr-defined]


def wait_gone(backend: object, key: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if key not in backend._gangs:  # type: ignore[attr-defined]
            return
        backend.gangs(time.time())  # type: ignore[attr-defined]
        time.sleep(0.1)
    raise AssertionError(f"{key} was never torn down")
