"""Placement on nodes: topology packing, best fit, CPU/memory, health, cordon, avoid."""

from __future__ import annotations

import pytest

from values.decisions import PendingReason, PreemptReason
from values.domain import Health
from values.snapshot import Policy

from .scenario import (
    ANY,
    RACK_PREFERRED,
    RACK_REQUIRED,
    SPINE_REQUIRED,
    Case,
    Placed,
    check,
    cordon,
    node,
    on,
    org,
    pending,
    rack,
    running,
    sick,
    snapshot,
)

A = [org("a", h100=64)]
# With backfill on, the first gang blocked for topology holds a reservation (RESERVED);
# these cases look at the reason itself.
NO_BACKFILL = Policy(backfill=False)

TOPOLOGY = [
    Case(
        "one rack when one can hold it: the fullest that suffices",
        snapshot(
            [rack("r0", 4), rack("r1", 3)],
            A,
            [running("x", on=["r1-n2"])],
            [pending("g", replicas=2)],
        ),
        placed={"g": on("r1-n0", "r1-n1")},
    ),
    Case(
        "else one spine, the fullest that suffices, racks with most room first",
        # s0 has 4 free nodes, s1 has 3 (r2: 1 free, r3: 2 free): s1, r3 first.
        snapshot(
            [
                rack("r0", 2, spine="s0"),
                rack("r1", 2, spine="s0"),
                rack("r2", 2, spine="s1"),
                rack("r3", 2, spine="s1"),
            ],
            A,
            [running("x", on=["r2-n0"])],
            [pending("g", replicas=3)],
        ),
        placed={"g": on("r2-n1", "r3-n0", "r3-n1")},
    ),
    Case(
        "else across spines",
        snapshot(
            [rack("r0", 2, spine="s0"), rack("r1", 2, spine="s1")],
            A,
            [running("x", on=["r0-n0"]), running("y", on=["r1-n0"])],
            [pending("g", replicas=2)],
        ),
        placed={"g": on("r0-n1", "r1-n1")},
    ),
    Case(
        "required rack: room in total but in no single rack waits for TOPOLOGY",
        snapshot(
            [rack("r0", 2), rack("r1", 2)],
            A,
            [running("x", on=["r0-n0"]), running("y", on=["r1-n0"])],
            [pending("g", replicas=2, topology=RACK_REQUIRED)],
            policy=NO_BACKFILL,
        ),
        pending={"g": PendingReason.TOPOLOGY},
    ),
    Case(
        "preferred rack falls back to the spine",
        snapshot(
            [rack("r0", 2), rack("r1", 2)],
            A,
            [running("x", on=["r0-n0"]), running("y", on=["r1-n0"])],
            [pending("g", replicas=2, topology=RACK_PREFERRED)],
        ),
        placed={"g": on("r0-n1", "r1-n1")},
    ),
    Case(
        "required spine: placed inside the one spine with room",
        snapshot(
            [rack("r0", 2, spine="s0"), rack("r1", 1, spine="s1"), rack("r2", 2, spine="s1")],
            A,
            [running("x", on=["r0-n0"])],
            [pending("g", replicas=3, topology=SPINE_REQUIRED)],
        ),
        placed={"g": on("r1-n0", "r2-n0", "r2-n1")},
    ),
    Case(
        "required spine: no spine with room waits for TOPOLOGY",
        snapshot(
            [rack("r0", 3, spine="s0"), rack("r1", 3, spine="s1")],
            A,
            [running("x", on=["r0-n0"]), running("y", on=["r1-n0"])],
            [pending("g", replicas=3, topology=SPINE_REQUIRED)],
            policy=NO_BACKFILL,
        ),
        pending={"g": PendingReason.TOPOLOGY},
    ),
]

BEST_FIT = [
    Case(
        "a single replica goes to the node with the least sufficient room",
        snapshot(
            rack("r0", 3),
            A,
            [running("x", on=["r0-n1"], acc=4), running("y", on=["r0-n2"], acc=6)],
            [pending("j", acc=2)],
        ),
        placed={"j": on("r0-n2")},
    ),
    Case(
        "a multi-replica gang fills the node with most room first (fewest nodes)",
        snapshot(
            rack("r0", 3),
            A,
            [running("x", on=["r0-n1"], acc=4), running("y", on=["r0-n2"], acc=4)],
            [pending("g", replicas=2, acc=4)],
        ),
        placed={"g": Placed(assignments=(("r0-n0", 2),))},
    ),
    Case(
        "replicas need CPU on the node, not only accelerators",
        snapshot(
            rack("r0", 2),
            A,
            [running("x", on=["r0-n0"], acc=1, cpu=40)],
            [pending("j", acc=1, cpu=32)],
        ),
        placed={"j": on("r0-n1")},
    ),
    Case(
        "replicas need memory on the node, not only accelerators",
        snapshot(
            rack("r0", 2),
            A,
            [running("x", on=["r0-n0"], acc=1, mem=400)],
            [pending("j", acc=1, mem=200)],
        ),
        placed={"j": on("r0-n1")},
    ),
    Case(
        "nodes of other flavors are never used",
        snapshot(
            [rack("r0", 1), rack("g0", 2, flavor="a100")],
            [org("a", h100=16, a100=16)],
            [running("x", on=["r0-n0"])],
            [pending("j")],
        ),
        placed={},
    ),
]


def test_single_node_gang_takes_the_best_fit_node_anywhere() -> None:
    """A gang that fits on one node goes to the node with the least sufficient room in the
    whole flavor; racks do not matter inside one node. r0-n0 has 3 free, r1-n0 has 2 and
    r1 more room elsewhere: a 2-GPU replica goes to r1-n0."""
    check(
        Case(
            "best fit anywhere",
            snapshot(
                [rack("r0", 2), rack("r1", 2)],
                A,
                [
                    running("x", on=["r0-n0"], acc=5),
                    running("y", on=["r0-n1"]),
                    running("z", on=["r1-n0"], acc=6),
                ],
                [pending("j", acc=2)],
            ),
            placed={"j": on("r1-n0")},
        )
    )


def test_multi_replica_gang_on_one_node_takes_the_best_fit_node() -> None:
    """2 x 2 GPUs fit on r0-n0 (4 free) or on the empty r1 nodes: the fullest node wins."""
    check(
        Case(
            "one node",
            snapshot(
                [rack("r0", 1), rack("r1", 2)],
                A,
                [running("x", on=["r0-n0"], acc=4)],
                [pending("g", replicas=2, acc=2)],
            ),
            placed={"g": Placed(assignments=(("r0-n0", 2),))},
        )
    )


def test_assignments_list_nodes_in_rank_order() -> None:
    d = check(
        Case(
            "ranks",
            snapshot(
                rack("r0", 3), A, [running("x", on=["r0-n1"], acc=4)], [pending("g", replicas=4, acc=4)]
            ),
            placed={"g": ANY},
        )
    )
    p = d.placed("g")
    assert p is not None
    # Most room first: the empty nodes take two replicas each, the half-full one none.
    assert p.assignments == (("r0-n0", 2), ("r0-n2", 2))


HEALTH = [
    Case(
        "a degraded node gets no multi-node gang",
        snapshot([sick(node("n0"), Health.DEGRADED), node("n1")], A, pending=[pending("g", replicas=2)]),
        pending={"g": PendingReason.HEALTH},
    ),
    Case(
        "a degraded node still takes single-node work",
        snapshot(
            [sick(node("n0"), Health.DEGRADED), node("n1")],
            A,
            [running("x", on=["n1"])],
            [pending("j")],
        ),
        placed={"j": on("n0")},
    ),
    Case(
        "a degraded node takes a multi-replica gang that fits on it whole",
        snapshot(
            [sick(node("n0"), Health.DEGRADED), node("n1")],
            A,
            [running("x", on=["n1"])],
            [pending("g", replicas=2, acc=4)],
        ),
        placed={"g": on("n0")},
    ),
    Case(
        "an unhealthy node takes nothing",
        snapshot([sick(node("n0")), node("n1")], A, [running("x", on=["n1"])], [pending("j")]),
        pending={"j": PendingReason.HEALTH},
    ),
    Case(
        "a cordoned node takes nothing",
        snapshot([cordon(node("n0")), node("n1")], A, [running("x", on=["n1"])], [pending("j")]),
        pending={"j": PendingReason.HEALTH},
    ),
    Case(
        "a restart avoids the nodes blamed for its failures",
        snapshot(rack("r0", 2), A, pending=[pending("j", avoid=["r0-n0"])]),
        placed={"j": on("r0-n1")},
    ),
    Case(
        "jobs on an unhealthy node are moved off, whole gangs too",
        snapshot(
            [sick(node("n0")), node("n1"), node("n2")],
            A,
            [running("x", on=["n0"], acc=4), running("g", on=["n1", "n0"], acc=4), running("ok", on=["n2"])],
        ),
        preempted={"x": (PreemptReason.HEALTH, None), "g": (PreemptReason.HEALTH, None)},
    ),
    Case(
        "a job already terminating is not preempted again",
        snapshot([sick(node("n0"))], A, [running("x", on=["n0"], terminating=True)]),
    ),
    Case(
        "degraded and cordoned nodes do not move running work",
        snapshot(
            [sick(node("n0"), Health.DEGRADED), cordon(node("n1"))],
            A,
            [running("x", on=["n0"]), running("y", on=["n1"])],
        ),
    ),
    Case(
        "with move_off_unhealthy off, nothing moves",
        snapshot([sick(node("n0"))], A, [running("x", on=["n0"])], policy=Policy(move_off_unhealthy=False)),
    ),
]


@pytest.mark.parametrize("case", TOPOLOGY + BEST_FIT + HEALTH, ids=str)
def test_placement(case: Case) -> None:
    check(case)
