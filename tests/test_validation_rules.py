"""The validation rules: which peer a node validates with, and what a run's end says."""

from __future__ import annotations

from values.domain import Health, Node, TopologyPath
from values.validation import Result, judge, pick_peer


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
