"""A real local Ray cluster for the ray backend's tests, shared by the session.

Four simulated h100 nodes (4 accelerators each, two racks) on loopback. At the end of
the session the fixture checks that the tests left no actor or placement group, and,
after stopping the cluster, that none of its processes (raylets, GCS, workers, jobs)
is still alive.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from ray_helpers import ASCEND, NAMESPACE, NODES, is_alive, processes_mentioning

from scheduler.backends.base import FINISHED


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[object]:
    ray = pytest.importorskip("ray")
    from scheduler.backends.ray.cluster import LocalRayCluster

    started = time.monotonic()
    cluster = LocalRayCluster([*NODES, ASCEND]).start()
    print(f"\nlocal Ray cluster of {len(NODES) + 1} nodes started in {time.monotonic() - started:.1f}s")
    # One driver connection for the session; the backends share it and never close it.
    ray.init(address=cluster.address, namespace=NAMESPACE, log_to_driver=False, configure_logging=False)
    temp = cluster._temp
    try:
        yield cluster
        actors = ray.util.list_named_actors(all_namespaces=True)
        groups = [g for g in ray.util.placement_group_table().values() if g["state"] != "REMOVED"]
        assert actors == [], f"actors left behind: {actors}"
        assert groups == [], f"placement groups left behind: {groups}"
    finally:
        pids = cluster.pids()
        cluster.stop()
    assert ray.is_initialized() is False
    alive = [pid for pid in pids if is_alive(pid)]
    assert alive == [], f"cluster processes still alive: {alive}"
    assert processes_mentioning(str(temp)) == []
    assert not Path(str(temp)).exists()


@pytest.fixture
def make_backend(ray_cluster: object, tmp_path: Path) -> Iterator[Callable[..., object]]:
    """make_backend() -> a RayBackend on the session cluster; every gang it still knows
    is stopped and forgotten at the end of the test."""
    from scheduler.backends.ray import RayBackend

    made: list[RayBackend] = []

    def make(**kwargs: object) -> RayBackend:
        opts: dict = {"state_dir": tmp_path / "state", "workdir": tmp_path, "namespace": NAMESPACE}
        b = RayBackend(ray_cluster.address, **{**opts, **kwargs})  # type: ignore[attr-defined]
        made.append(b)
        return b

    yield make
    for b in made:
        for st in b.gangs(time.time()):
            b.stop(st.key, 0.0, time.time())
        deadline = time.monotonic() + 30
        while b.gangs(time.time()) and time.monotonic() < deadline:
            for st in b.gangs(time.time()):
                if st.phase in FINISHED:
                    b.forget(st.key)
            time.sleep(0.1)
        b.close()
