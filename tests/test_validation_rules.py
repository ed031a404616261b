"""The validation rules: which peer a node validates with, which agents its pingmesh
probes and what the probes say, and what a run's end says."""

from __future__ import annotations

from values.domain import Health, Node, TopologyPath
from values.validation import Result, judge, pick_peer, pingmesh_problem, pingmesh_targets


def node(name: str, rack: str = "r0", flavor: str = "h100", **kw: object) -> Node:
    return Node(name=name, flavor=flavor, accelerators=8, topology=TopologyPath(rack=rack), **kw)  # type: ignore[arg-type]


def test_the_peer_is_healthy_uncordoned_of_the_flavor_and_in_the_rack_first() -> None:
    me = node("n5", rack="r1")
    pool = [
        node("n0", rack="r0"),
        node("n1", rack="r1", health=Health.DEGRADED),
        node("n2", rack="r1", cordoned=True),
        node("n3", rack="r1", flavor="a100"),
        node("n4", rack="r1"),
        me,
    ]
    assert pick_peer(me, pool) == "n4"
    assert pick_peer(me, pool, busy=["n4"]) == "n0"  # another rack rather than none
    assert pick_peer(me, [me, node("n1", health=Health.UNHEALTHY)]) is None


def test_what_a_finished_run_says_about_the_node() -> None:
    assert judge("succeeded", 0, None, "n1", "", False).result is Result.PASSED
    failed = judge("failed", 1, None, "n1", "replica 0 exited 1", False)
    assert (failed.result, failed.message) == (Result.FAILED, "replica 0 exited 1")
    assert judge("lost", None, "n1", "n1", "node n1 lost", False).result is Result.FAILED
    assert judge("lost", None, "n0", "n1", "node n0 lost", False).result is Result.INCONCLUSIVE  # the peer
    assert judge("stopped", None, None, "n1", "", False).result is Result.INCONCLUSIVE
    assert judge("running", None, None, "n1", "", True).result is Result.FAILED  # overdue


def test_the_pingmesh_probes_healthy_nodes_with_a_live_agent_rack_mates_first() -> None:
    me = node("n9", rack="r1")
    pool = [
        node("n0", rack="r0", flavor="a100"),  # any flavor: the network is shared
        node("n1", rack="r1", health=Health.DEGRADED),
        node("n2", rack="r1", cordoned=True),
        node("n3", rack="r1"),
        node("n4", rack="r0"),
        node("n5", rack="r1"),  # no live agent
        me,
    ]
    agents = ["n0", "n1", "n2", "n3", "n4", "n9"]
    assert pingmesh_targets(me, pool, agents, limit=8) == ["n3", "n0", "n4"]
    assert pingmesh_targets(me, pool, agents, limit=2) == ["n3", "n0"]
    assert pingmesh_targets(me, pool, [], limit=8) == []


def test_the_pingmesh_fails_the_node_only_when_most_of_its_peers_lose_probes() -> None:
    clean = [("n1", 200, 0), ("n2", 200, 2), ("n3", 200, 4)]  # 1 % and 2 %: at most the limit
    assert pingmesh_problem(clean, max_loss=0.02) is None
    one_bad_peer = [("n1", 200, 0), ("n2", 200, 100), ("n3", 200, 0)]  # that peer's or its link's
    assert pingmesh_problem(one_bad_peer, max_loss=0.02) is None
    most = [("n1", 200, 0), ("n2", 200, 100), ("n3", 0, 0)]  # n3 never answered at all
    assert pingmesh_problem(most, max_loss=0.02) == "pingmesh: loss over 2% to 2 of 3 peers (n3 100%, n2 50%)"
    assert pingmesh_problem([], max_loss=0.02) is None
