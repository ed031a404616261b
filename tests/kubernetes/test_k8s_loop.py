"""The control loop, a SQLite store and the kubernetes backend built as the server
builds it (--backend kubernetes --address <kubeconfig>): a job runs, fails, is
evicted, restarts, succeeds, and leaves nothing behind in the cluster; a job whose ranks
stop stepping (their progress on the shared checkpoint volume) is restarted from its
checkpoint."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from k8s_support import NS, CoreApi
from service.harness import Clock, Pool, orgs

from scheduler.backends.kubernetes import KubernetesBackend
from scheduler.backends.registry import BackendSettings, build_backend
from scheduler.config import PoolConfig
from scheduler.sdk import MANIFEST, progress_file
from scheduler.store import jobs as jobstore
from values.lifecycle import JobState
from values.progress import ProgressRule

pytestmark = pytest.mark.integration


def _pool_config() -> PoolConfig:
    return PoolConfig.model_validate(
        {"flavors": [{"name": "h100"}], "orgs": [{"name": "a", "quotas": {"h100": {"nominal": 16}}}]}
    )


# Hung after 30 s of the loop's clock without a rank's step rising.
RULE = ProgressRule(hang_floor_seconds=30)


@pytest.fixture
def pool(api: CoreApi, kubeconfig: Path, tmp_path: Path):
    for n in ("gpu-a", "gpu-b", "gpu-c"):
        api.add_node(n, labels={"trainpool.io/rack": "r1"})
    root = tmp_path / "ckpt"  # the shared checkpoint volume, as the server mounts it
    settings = BackendSettings(
        config=_pool_config(), address=str(kubeconfig), checkpoint_root=root,
        options={"namespace": NS, "watch_seconds": "2"},
    )  # fmt: skip
    backend = build_backend("kubernetes", settings)
    assert isinstance(backend, KubernetesBackend)
    p = Pool(f"sqlite:///{tmp_path / 'pool.db'}", org_list=orgs(a=24), backend=backend, clock=Clock(),  # type: ignore[arg-type]
             progress=RULE, checkpoint_root=str(root))  # fmt: skip
    yield p
    backend.close()


def _until(pool: Pool, check, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pool.cycle(advance=1.0)
        result = check()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached in {timeout}s")


def _pods(api: CoreApi, job: str, attempt: int) -> list[dict]:
    return [p for p in api.pods() if p["metadata"]["labels"]["trainpool.io/attempt"] == str(attempt)
            and p["metadata"]["annotations"]["trainpool.io/key"] == f"{job}/{attempt}"]  # fmt: skip


def test_a_job_fails_is_evicted_restarts_and_succeeds_through_the_loop(pool: Pool, api: CoreApi) -> None:
    job = pool.submit("a", replicas=2, accelerators=8, restart={"backoff_seconds": 0, "max_restarts": 3})
    pool.cycle()
    pods = _pods(api, job, 0)
    assert len(pods) == 2 and len({p["spec"]["nodeName"] for p in pods}) == 2
    env = {e["name"]: e["value"] for e in pods[0]["spec"]["containers"][0]["env"]}
    assert env["TRAINPOOL_CHECKPOINT_DIR"].endswith(job) and env["TRAINPOOL_ATTEMPT"] == "0"
    assert pool.state(job) is JobState.STARTING
    for p in pods:
        api.run_pod(p["metadata"]["name"])
    _until(pool, lambda: pool.state(job) is JobState.RUNNING, "RUNNING")

    # Rank 1 exits 3: the job's own failure, charged to its restart budget.
    api.exit_pod(pods[1]["metadata"]["name"], 3)
    _until(pool, lambda: _pods(api, job, 1), "attempt 1 launched")
    row = pool.job(job)
    assert (row.attempt, row.restarts) == (1, 1)
    assert _pods(api, job, 0) == []  # the failed attempt's pods are cleaned up

    # An eviction: the infrastructure's failure, free, and its node is avoided next time.
    second = _pods(api, job, 1)
    for p in second:
        api.run_pod(p["metadata"]["name"])
    _until(pool, lambda: pool.state(job) is JobState.RUNNING, "attempt 1 RUNNING")
    evicted_node = second[0]["spec"]["nodeName"]
    api.evict_pod(second[0]["metadata"]["name"])
    third = _until(pool, lambda: _pods(api, job, 2), "attempt 2 launched")
    row = pool.job(job)
    assert (row.attempt, row.restarts) == (2, 1)
    assert evicted_node not in {p["spec"]["nodeName"] for p in third}

    for p in third:
        api.run_pod(p["metadata"]["name"])
        api.exit_pod(p["metadata"]["name"], 0)
    _until(pool, lambda: pool.state(job) is JobState.SUCCEEDED, "SUCCEEDED")
    assert api.pods() == [] and api.services() == []
    assert "restart" in pool.events(job)


def test_a_survivor_that_fails_before_its_peers_node_is_seen_lost_is_not_charged(
    pool: Pool, api: CoreApi
) -> None:
    # The order a real cluster shows: rank 1's collective fails at once, the kubelet of
    # rank 0's node stops reporting a little later. Held for the correlation window, the
    # exit is the node's fault: restart not charged, and rank 0's node is avoided.
    job = pool.submit("a", replicas=2, accelerators=8, restart={"backoff_seconds": 0, "max_restarts": 3})
    pool.cycle()
    pods = _pods(api, job, 0)
    for p in pods:
        api.run_pod(p["metadata"]["name"])
    _until(pool, lambda: pool.state(job) is JobState.RUNNING, "RUNNING")
    api.exit_pod(pods[1]["metadata"]["name"], 1)
    pool.cycle(advance=2.0)
    assert pool.state(job) is JobState.RUNNING  # the exit is held
    dead = pods[0]["spec"]["nodeName"]
    api.set_ready(dead, False)
    _until(pool, lambda: pool.job(job).attempt == 1, "restarted")
    row = pool.job(job)
    assert (row.restarts, row.failure_class) == (0, "infrastructure")
    assert dead in row.avoid_nodes


def test_ranks_that_stop_stepping_are_restarted_from_their_checkpoint(pool: Pool, api: CoreApi) -> None:
    job = pool.submit("a", replicas=2, accelerators=8)
    pool.cycle()
    pods = _pods(api, job, 0)
    env = {e["name"]: e["value"] for e in pods[0]["spec"]["containers"][0]["env"]}
    folder = Path(env["TRAINPOOL_CHECKPOINT_DIR"])
    for p in pods:
        api.run_pod(p["metadata"]["name"])
    _until(pool, lambda: pool.state(job) is JobState.RUNNING, "RUNNING")
    # What the pods' SDK wrote on the shared volume: a checkpoint after step 19, and both
    # ranks at step 25, where they stay (a collective that never returns).
    saved = folder / "step-19.pt"
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_bytes(b"state")
    (folder / MANIFEST).write_text(json.dumps({"step": 19, "path": str(saved)}))
    for rank in (0, 1):
        progress_file(folder, rank).parent.mkdir(parents=True, exist_ok=True)
        record = {"attempt": 0, "rank": rank, "step": 25, "step_seconds": 0.1, "at": time.time()}
        progress_file(folder, rank).write_text(json.dumps(record))
    restarted = _until(pool, lambda: _pods(api, job, 1), "attempt 1 launched", timeout=30)
    with pool.db.read() as s:
        restart = next(e for e in jobstore.events(s, job) if e.event == "restart")
    assert restart.reason == "hang" and "made no progress" in restart.message, restart.message
    env = {e["name"]: e["value"] for e in restarted[0]["spec"]["containers"][0]["env"]}
    assert env["TRAINPOOL_RESUME_FROM"] == str(saved)
    assert pool.job(job).restarts == 0  # not charged
