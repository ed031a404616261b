"""The ray backend's pure parts: labels to nodes, ranks to replicas and their environment
(the gang's phase: tests/backends/test_gang_phase.py)."""

from __future__ import annotations

from scheduler.backends.ray import labels as lb
from scheduler.backends.ray.layout import ignored_image, replica_env, replicas
from values.domain import Health, Node, TopologyPath


def record(labels: dict[str, str], alive: bool = True, node_id: str = "abc123", **resources: float) -> dict:
    return {"NodeID": node_id, "Alive": alive, "NodeManagerAddress": "10.0.0.7", "Labels": labels,
            "Resources": resources}  # fmt: skip


def test_labels_round_trip_into_a_pool_node() -> None:
    node = Node(name="a100-07", flavor="a100", accelerators=8, cpu=96, memory_gb=1024,
                topology=TopologyPath(zone="z1", spine="s2", rack="r3", nvlink_domain="nvl-1"))  # fmt: skip
    found = lb.pool_node(record(lb.labels_for(node)))
    assert found is not None
    assert found.node == node
    assert (found.node_id, found.ip, found.alive) == ("abc123", "10.0.0.7", True)


def test_a_node_without_the_flavor_label_is_not_a_pool_node() -> None:
    assert lb.pool_node(record({"ray.io/node-id": "x"})) is None


def test_accelerators_fall_back_to_the_declared_resource_and_cpu_to_the_pool_config() -> None:
    labels = {lb.FLAVOR: "h100", lb.NODE: "n1"}
    config = {"n1": Node(name="n1", flavor="h100", accelerators=2, cpu=12, memory_gb=99)}
    found = lb.pool_node(record(labels, **{"accel-h100": 2.0}), config)
    assert found is not None
    assert (found.node.accelerators, found.node.cpu, found.node.memory_gb) == (2, 12, 99)


def test_a_dead_node_is_unhealthy_and_a_live_namesake_wins() -> None:
    labels = {lb.FLAVOR: "h100", lb.NODE: "n1", lb.ACCELERATORS: "4"}
    dead = record(labels, alive=False, node_id="old")
    assert lb.pool_nodes([dead])[0].node.health is Health.UNHEALTHY
    both = lb.pool_nodes([dead, record(labels, node_id="new"), dead])
    assert [(r.node_id, r.node.health) for r in both] == [("new", Health.HEALTHY)]


def test_bad_labels_do_not_make_a_node() -> None:
    assert lb.pool_node(record({lb.FLAVOR: "H100!", lb.NODE: "n1"})) is None


def test_ranks_local_ranks_and_devices_follow_the_assignment_order() -> None:
    reps = replicas((("n1", 2), ("n2", 1)), accelerators=2)
    assert [(r.rank, r.node, r.local_rank, r.local_world_size, r.node_rank, r.devices) for r in reps] == [
        (0, "n1", 0, 2, 0, (0, 1)),
        (1, "n1", 1, 2, 0, (2, 3)),
        (2, "n2", 0, 1, 1, (0, 1)),
    ]


def test_devices_skip_those_another_live_gang_holds_on_the_node() -> None:
    reps = replicas((("n1", 2),), accelerators=1, busy={"n1": {0, 2}}, capacity={"n1": 4})
    assert [r.devices for r in reps] == [(1,), (3,)]


def test_devices_fall_back_to_local_rank_order_when_the_node_seems_full() -> None:
    reps = replicas((("n1", 1),), accelerators=2, busy={"n1": {0, 1, 2}}, capacity={"n1": 4})
    assert reps[0].devices == (0, 1)


def test_replica_env_sets_rank_variables_and_the_pool_wins_over_the_job() -> None:
    rep = replicas((("n1", 1), ("n2", 1)), accelerators=2)[1]
    env = replica_env(
        rep, 2, {"RANK": "99", "FOO": "bar"}, {"TRAINPOOL_JOB_ID": "j"}, "ASCEND_RT_VISIBLE_DEVICES"
    )
    assert env["RANK"] == "1" and env["WORLD_SIZE"] == "2" and env["LOCAL_RANK"] == "0"
    assert env["FOO"] == "bar" and env["TRAINPOOL_JOB_ID"] == "j" and env["TRAINPOOL_NODE"] == "n2"
    assert env["ASCEND_RT_VISIBLE_DEVICES"] == "0,1"


def test_a_jobs_image_is_warned_about_once_at_its_first_attempt() -> None:
    assert ignored_image("j-1", 0, None) is None
    assert ignored_image("j-1", 3, "train:1") is None  # said at attempt 0 already
    warning = ignored_image("j-1", 0, "train:1")
    assert warning is not None and warning.startswith("job j-1: image 'train:1' is ignored")
