"""Node validation on real Ray, with the real program (scheduler.validation_job): a node
that joins the pool runs a burn-in and a gloo all-reduce with a healthy peer before it
takes work; one that passes rejoins, one that fails stays cordoned, quarantined."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from test_loop import LoopOnRay

from scheduler.store.tables import NodeRow
from values.domain import Node, TopologyPath
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


def test_a_node_that_joins_passes_validation_and_takes_work(
    ray_cluster: object, make_backend: Callable[..., object], tmp_path: Path
) -> None:
    backend = make_backend()
    rule = ValidationRule(enabled=True, env={"VALIDATE_BURN_SECONDS": "2"})
    pool = LoopOnRay(backend, tmp_path, {"h100": 20}, validation=rule)
    _joins(ray_cluster, pool, "v-00")
    try:
        began = time.monotonic()
        row = _validated(pool, "v-00")
        took = time.monotonic() - began
        assert (row.validation, row.cordoned) == ("passed", False), row.validation_message
        assert row.validation_peer is not None and row.validation_peer.startswith("h100-")
        lines = backend.logs("validate-v-00/1", 20, time.time(), replica=0)  # type: ignore[attr-defined]
        report = json.loads(next(line for line in lines if line.startswith("{")))
        assert report["node"] == "v-00" and report["burn_in"][0]["products"] > 0
        assert report["all_reduce"]["world"] == 2 and report["all_reduce"]["bus_gbps"] > 0
        print(f"\nv-00 validated in {took:.1f}s: {report}")
        # It takes work: a job that needs every h100 node, v-00 included.
        job = pool.submit("h100", replicas=5, accelerators=4, env={}, command=["python", "-c", "pass"])
        pool.run_until(job, lambda j: j.state == JobState.SUCCEEDED, timeout=90)
    finally:
        ray_cluster.kill_node("v-00")  # type: ignore[attr-defined]


def test_a_node_that_fails_validation_stays_out_of_service(
    ray_cluster: object, make_backend: Callable[..., object], tmp_path: Path
) -> None:
    backend = make_backend()
    # A floor no CPU reaches: the real program's own check fails the node.
    env = {"VALIDATE_BURN_SECONDS": "1", "VALIDATE_MIN_GFLOPS": "1e9"}
    pool = LoopOnRay(backend, tmp_path, {"h100": 20}, validation=ValidationRule(enabled=True, env=env))
    _joins(ray_cluster, pool, "v-01")
    try:
        row = _validated(pool, "v-01")
        assert (row.validation, row.cordoned) == ("failed", True), row.validation_message
        lines = backend.logs("validate-v-01/1", 20, time.time(), replica=0)  # type: ignore[attr-defined]
        assert any("below the floor" in line for line in lines), lines
        job = pool.submit("h100", replicas=5, accelerators=4, env={}, command=["python", "-c", "pass"])
        for _ in range(10):
            pool.loop.cycle()
            time.sleep(0.2)
        assert pool.job(job).state == JobState.PENDING  # four nodes of room: v-01 stays out
    finally:
        ray_cluster.kill_node("v-01")  # type: ignore[attr-defined]
