"""Node validation on real Ray, with the real program (scheduler.validation_job): a node
that joins the pool runs a burn-in, a pingmesh to the healthy nodes' agents (real probe
listeners on loopback) and a gloo all-reduce with a healthy peer before it takes work;
one that passes rejoins, one that fails stays cordoned, quarantined."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from probe_listeners import probe_listeners
from test_loop import LoopOnRay

from scheduler.store import agents as agentstore
from scheduler.store.tables import NodeRow
from values.domain import Health, Node, TopologyPath
from values.lifecycle import JobState
from values.validation import ValidationRule

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("ray")]


def _joins(cluster: object, pool: LoopOnRay, name: str) -> None:
    pool.loop.cycle()  # the pool's first inventory: its bring-up, nothing validates
    node = Node(
        name=name, flavor="h100", accelerators=4, cpu=16, memory_gb=64, topology=TopologyPath(rack="rack-9")
    )
    cluster.add_node(node)  # type: ignore[attr-defined]


def _validated(pool: LoopOnRay, name: str, timeout: float = 120.0) -> NodeRow:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pool.loop.cycle()
        with pool.db.read() as s:
            row = s.get(NodeRow, name)
        if row is not None and row.validation in ("passed", "failed"):
            return row
        time.sleep(0.3)
    raise AssertionError(f"{name}: validation did not end; last {row}")


@contextlib.contextmanager
def _leaves_after(cluster: object, backend: object, name: str) -> Iterator[None]:
    """The node is killed after the block, however it ends, and the test waits until Ray
    knows: a later test would otherwise pick the dead node as its validation peer (its
    run then says nothing and runs again, and its replicas outlive that test)."""
    try:
        yield
    finally:
        cluster.kill_node(name)  # type: ignore[attr-defined]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            alive = {n.name for n in backend.inventory(time.time()) if n.health is Health.HEALTHY}  # type: ignore[attr-defined]
            if name not in alive:
                break
            time.sleep(0.5)


def test_a_node_that_joins_passes_validation_and_takes_work(
    ray_cluster: object, make_backend: Callable[..., object], tmp_path: Path
) -> None:
    backend = make_backend()
    rule = ValidationRule(enabled=True, env={"VALIDATE_BURN_SECONDS": "2"}, pingmesh_seconds=2)
    pool = LoopOnRay(backend, tmp_path, {"h100": 20}, validation=rule)
    _joins(ray_cluster, pool, "v-00")
    with probe_listeners(2) as ports, _leaves_after(ray_cluster, backend, "v-00"):
        with pool.db.write() as s:  # two healthy nodes' agents, just reported
            for name, port in zip(("h100-00", "h100-01"), ports, strict=True):
                agentstore.register(s, name, {"address": "127.0.0.1", "probe_port": port}, time.time())
        began = time.monotonic()
        row = _validated(pool, "v-00")
        took = time.monotonic() - began
        assert (row.validation, row.cordoned) == ("passed", False), row.validation_message
        assert row.validation_peer is not None and row.validation_peer.startswith("h100-")
        key = f"validate-v-00/{row.validation_run}"
        lines = backend.logs(key, 20, time.time(), replica=0)  # type: ignore[attr-defined]
        report = json.loads(next(line for line in lines if line.startswith("{")))
        assert report["node"] == "v-00" and report["burn_in"][0]["products"] > 0
        assert report["all_reduce"]["world"] == 2 and report["all_reduce"]["bus_gbps"] > 0
        assert set(report["pingmesh"]) == {"h100-00", "h100-01"}
        assert all(p["sent"] >= 10 and p["lost"] == 0 for p in report["pingmesh"].values()), report
        print(f"\nv-00 validated in {took:.1f}s: {report}")
        # It takes work: a job that needs every h100 node, v-00 included.
        job = pool.submit("h100", replicas=5, accelerators=4, env={}, command=["python", "-c", "pass"])
        pool.run_until(job, lambda j: j.state == JobState.SUCCEEDED, timeout=90)


def test_a_node_that_fails_validation_stays_out_of_service(
    ray_cluster: object, make_backend: Callable[..., object], tmp_path: Path
) -> None:
    backend = make_backend()
    # A floor no CPU reaches: the real program's own check fails the node.
    env = {"VALIDATE_BURN_SECONDS": "1", "VALIDATE_MIN_GFLOPS": "1e9"}
    pool = LoopOnRay(backend, tmp_path, {"h100": 20}, validation=ValidationRule(enabled=True, env=env))
    _joins(ray_cluster, pool, "v-01")
    with _leaves_after(ray_cluster, backend, "v-01"):
        row = _validated(pool, "v-01")
        assert (row.validation, row.cordoned) == ("failed", True), row.validation_message
        # Why, in the node's own row (`nodes describe`): the program's last line.
        assert row.validation_message.startswith("rank 0: exit code 1: validation failed on v-01: cpu: ")
        assert "below the floor" in row.validation_message, row.validation_message
        job = pool.submit("h100", replicas=5, accelerators=4, env={}, command=["python", "-c", "pass"])
        for _ in range(10):
            pool.loop.cycle()
            time.sleep(0.2)
        assert pool.job(job).state == JobState.PENDING  # four nodes of room: v-01 stays out
