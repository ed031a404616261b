"""Expedited requeue: a gang back after an infrastructure failure (a lost node, a move off
an unhealthy one) heads its org's queue among its priority, and gets the nodes it still
had first, with its ranks where they were; neither beats a higher priority, another org's
fair share, or whether it fits at all."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.core import decide
from values.decisions import PendingReason
from values.snapshot import PendingJob, Policy, Snapshot, WithinOrg

from . import strategies as gen
from .scenario import (
    ANY,
    H100,
    RACK_REQUIRED,
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

TWO = rack("r0", 2)
# r0: three free nodes, the best fit for a 3-node gang; r1: the gang's old rack, where
# n1 failed it, n2 and n3 survived, and n0 and n4 are free.
R0 = rack("r0", 3)
R1 = rack("r1", 5)
SURVIVORS = ("r1-n2", "r1-n3")


def back(id: str = "back", **kw: Any) -> PendingJob:
    """A 3 x 8 gang requeued after losing r1-n1 (the loop avoids it and prefers the rest)."""
    args: dict[str, Any] = {"replicas": 3, "submitted": 50.0, "avoid": ["r1-n1"], "expedite": True}
    return pending(id, **(args | kw))


CASES = [
    Case(
        "an expedited gang goes ahead of an older job of its org and priority",
        snapshot(
            TWO,
            [org("a")],
            pending=[pending("older", replicas=2), pending("back", replicas=2, submitted=9.0, expedite=True)],
        ),
        now=100.0,
        placed={"back": ANY},
        pending={"older": PendingReason.RESERVED},
    ),
    Case(
        "without the flag the older job goes first (the same queue, for contrast)",
        snapshot(
            TWO,
            [org("a")],
            pending=[pending("older", replicas=2), pending("back", replicas=2, submitted=9.0)],
        ),
        now=100.0,
        placed={"older": ANY},
    ),
    Case(
        "a short job's response ratio does not beat it either",
        snapshot(
            TWO,
            [org("a")],
            pending=[
                pending("short", replicas=2, runtime=60.0),
                pending("back", replicas=2, submitted=9.0, runtime=86_400.0, expedite=True),
            ],
        ),
        now=100.0,
        placed={"back": ANY},
    ),
    Case(
        "it does not go ahead of a higher priority of its org",
        snapshot(
            TWO,
            [org("a")],
            pending=[
                pending("urgent", replicas=2, prio=1000, submitted=20.0),
                pending("back", replicas=2, submitted=9.0, expedite=True),
            ],
        ),
        now=100.0,
        placed={"urgent": ANY},
    ),
    Case(
        "it does not take another org's fair-share turn",
        # a used much of the pool lately: b's job comes first, expedited or not.
        snapshot(
            TWO,
            [org("a"), org("b")],
            pending=[
                pending("back", replicas=2, submitted=9.0, expedite=True),
                pending("b1", "b", replicas=2),
            ],
            usage={"a": {H100: 0.5 * 16 * Policy().half_life_seconds / math.log(2)}},
        ),
        now=100.0,
        placed={"b1": ANY},
        pending={"back": PendingReason.RESERVED},
    ),
    Case(
        "it is offered its surviving nodes first, ranks kept, the rest from their rack",
        snapshot(
            [R0, R1],
            [org("a")],
            running=[running("old", on=["r1-n1"], started=0.0)],
            pending=[back(prefer=SURVIVORS)],
        ),
        now=100.0,
        placed={"back": Placed(assignments=(("r1-n2", 1), ("r1-n3", 1), ("r1-n0", 1)))},
    ),
    Case(
        "without preferred nodes the same gang takes the best-fitting rack (for contrast)",
        snapshot([R0, R1], [org("a")], running=[running("old", on=["r1-n1"], started=0.0)], pending=[back()]),
        now=100.0,
        placed={"back": on("r0-n0", "r0-n1", "r0-n2")},
    ),
    Case(
        "a survivor now unhealthy is passed over, the other one kept",
        snapshot([R0, [R1[0], R1[1], sick(R1[2]), *R1[3:]]], [org("a")], pending=[back(prefer=SURVIVORS)]),
        now=100.0,
        placed={"back": Placed(assignments=(("r1-n3", 1), ("r1-n0", 1), ("r1-n4", 1)))},
    ),
    Case(
        "survivors unhealthy or cordoned since are no reason to go back to their rack",
        snapshot(
            [R0, [R1[0], R1[1], sick(R1[2]), cordon(R1[3]), R1[4]]],
            [org("a")],
            pending=[back(prefer=SURVIVORS)],
        ),
        now=100.0,
        placed={"back": on("r0-n0", "r0-n1", "r0-n2")},
    ),
    Case(
        "a survivor with room for a replica less is used for what fits",
        snapshot(
            [node("big-0", acc=16, rack="r1"), node("big-1", acc=16, rack="r1"), *rack("r2", 2)],
            [org("a")],
            running=[running("x", on=["big-0"], started=0.0)],
            pending=[pending("g", replicas=3, expedite=True, prefer=("big-0", "gone"))],
        ),
        now=100.0,
        # big-0 holds one replica now, big-1 (its rack) two: before r2's empty nodes.
        placed={"g": Placed(assignments=(("big-0", 1), ("big-1", 2)))},
    ),
    Case(
        "under a required rack, survivors whose rack has no room left do not hold it back",
        snapshot(
            [R0, R1],
            [org("a")],
            running=[running("x", on=["r1-n0"], started=0.0), running("y", on=["r1-n4"], started=0.0)],
            pending=[back(prefer=SURVIVORS, topology=RACK_REQUIRED)],
        ),
        now=100.0,
        placed={"back": on("r0-n0", "r0-n1", "r0-n2")},
    ),
    Case(
        "under a required rack, the rest comes from the survivors' rack",
        snapshot([R0, R1], [org("a")], pending=[back(prefer=SURVIVORS, topology=RACK_REQUIRED)]),
        now=100.0,
        placed={"back": Placed(assignments=(("r1-n2", 1), ("r1-n3", 1), ("r1-n0", 1)))},
    ),
    Case(
        "a one-node job prefers its old node over the best fit",
        snapshot(
            [node("n0"), node("n1")],
            [org("a")],
            running=[running("x", on={"n0": 1}, acc=4)],
            pending=[pending("one", acc=4, expedite=True, prefer=("n1",))],
        ),
        placed={"one": on("n1")},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_expedited_requeue(case: Case) -> None:
    check(case)


@pytest.mark.parametrize("within", list(WithinOrg))
def test_it_heads_its_org_whatever_ranks_the_org_within(within: WithinOrg) -> None:
    jobs = [
        pending("older", replicas=2, runtime=60.0),
        pending("back", replicas=2, submitted=9.0, expedite=True),
    ]
    snap = snapshot(TWO, [org("a")], pending=jobs, policy=Policy(within_org=within))
    assert [p.job_id for p in decide(snap, 100.0).placements] == ["back"]


ALONE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@ALONE
@given(gen.any_snapshots, st.data())
def test_preferred_nodes_never_change_whether_a_gang_fits(snap: Snapshot, data: st.DataObject) -> None:
    # Alone in the queue, a job is placed with preferred nodes exactly when it is without.
    names = [n.name for n in snap.nodes]
    for job in snap.pending:
        plain = dataclasses.replace(job, expedite=False, prefer_nodes=())
        prefer = tuple(data.draw(st.lists(st.sampled_from(names), max_size=5, unique=True)))
        preferring = dataclasses.replace(plain, expedite=True, prefer_nodes=prefer)
        alone = [decide(dataclasses.replace(snap, pending=(j,)), gen.NOW) for j in (plain, preferring)]
        assert [d.placed(job.id) is None for d in alone] == [True, True] or all(
            d.placed(job.id) is not None for d in alone
        ), prefer
