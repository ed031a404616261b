"""Quota admission: borrowing limits, Kueue-style lending, zero-nominal orgs, flavors."""

from __future__ import annotations

import pytest

from values.decisions import PendingReason, PlaceReason
from values.snapshot import Policy

from .scenario import (
    A100,
    ANY,
    H100,
    Case,
    Placed,
    check,
    on,
    org,
    pending,
    quota,
    rack,
    running,
    snapshot,
)

POOL = rack("r0", 4)  # 32 h100
MIXED = [rack("h", 2), rack("g", 2, flavor=A100)]  # 16 h100, 16 a100

BORROWING = [
    Case(
        "within nominal is NOMINAL",
        snapshot(POOL, [org("a", h100=16)], pending=[pending("j", replicas=2)]),
        placed={"j": Placed(reason=PlaceReason.NOMINAL)},
    ),
    Case(
        "above nominal within the borrowing limit is BORROWED",
        snapshot(
            POOL,
            [org("a", h100=quota(8, borrow=8))],
            [running("r", on=["r0-n0"])],
            [pending("j")],
        ),
        placed={"j": Placed(reason=PlaceReason.BORROWED)},
    ),
    Case(
        "above nominal + borrowing limit waits for QUOTA, though nodes are free",
        snapshot(
            POOL,
            [org("a", h100=quota(8, borrow=8))],
            [running("r", on=["r0-n0", "r0-n1"])],
            [pending("j")],
        ),
        pending={"j": PendingReason.QUOTA},
    ),
    Case(
        "terminating jobs still count against the org",
        snapshot(
            POOL,
            [org("a", h100=quota(8, borrow=0))],
            [running("r", on=["r0-n0"], terminating=True)],
            [pending("j")],
        ),
        pending={"j": PendingReason.QUOTA},
    ),
    Case(
        "borrowing off: the ceiling is nominal",
        snapshot(
            POOL,
            [org("a", h100=8)],
            [running("r", on=["r0-n0"])],
            [pending("j")],
            policy=Policy(borrowing=False),
        ),
        pending={"j": PendingReason.QUOTA},
    ),
    Case(
        "an org with zero nominal can only borrow, and does",
        snapshot(POOL, [org("a", h100=32), org("z")], pending=[pending("j", org="z", replicas=2)]),
        placed={"j": Placed(reason=PlaceReason.BORROWED)},
    ),
    Case(
        "unassigned capacity is shared: a small org borrows the whole idle pool",
        snapshot(POOL, [org("a", h100=8), org("b", h100=8)], pending=[pending("j", replicas=4)]),
        placed={"j": Placed(reason=PlaceReason.BORROWED)},
    ),
]


LENDING = [
    Case(
        "a lending limit keeps the private share idle on purpose",
        # a: nominal 24, lends 8 (private 16). b: nominal 8. shared = 32 - 16 = 16.
        # b already uses 8 of it; 16 more would need 24 of a shared pool of 16.
        snapshot(
            POOL,
            [org("a", h100=quota(24, lend=8)), org("b", h100=8)],
            [running("r", "b", on=["r0-n0"])],
            [pending("j", "b", replicas=2)],
        ),
        pending={"j": PendingReason.LENDING},
    ),
    Case(
        "up to the lendable part borrowing works",
        snapshot(
            POOL,
            [org("a", h100=quota(24, lend=8)), org("b", h100=8)],
            [running("r", "b", on=["r0-n0"])],
            [pending("j", "b")],
        ),
        placed={"j": Placed(reason=PlaceReason.BORROWED)},
    ),
    Case(
        "lending limit 0: an idle org lends nothing",
        snapshot(
            rack("r0", 2),
            [org("a", h100=quota(8, lend=0)), org("b")],
            [running("r", "b", on=["r0-n0"])],
            [pending("j", "b")],
        ),
        pending={"j": PendingReason.LENDING},
    ),
    Case(
        "the private share comes back without preempting anybody",
        # a: nominal 16, private 8; b borrows the whole shared pool (24 of 32).
        snapshot(
            POOL,
            [org("a", h100=quota(16, lend=8)), org("b", h100=16)],
            [running("b1", "b", on=["r0-n0", "r0-n1", "r0-n2"])],
            [pending("j")],
        ),
        placed={"j": on("r0-n3", reason=PlaceReason.NOMINAL)},
    ),
]


FLAVORS = [
    Case(
        "accepted flavors in preference order",
        snapshot(MIXED, [org("a", h100=16, a100=16)], pending=[pending("j", flavors=(A100, H100))]),
        placed={"j": Placed(flavor=A100, reason=PlaceReason.NOMINAL)},
    ),
    Case(
        "a flavor without borrowing beats a preferred one that needs it",
        snapshot(MIXED, [org("a", a100=8)], pending=[pending("j", flavors=(H100, A100))]),
        placed={"j": Placed(flavor=A100, reason=PlaceReason.NOMINAL)},
    ),
    Case(
        "when every flavor needs borrowing, the first that fits",
        snapshot(MIXED, [org("a")], pending=[pending("j", flavors=(H100, A100))]),
        placed={"j": Placed(flavor=H100, reason=PlaceReason.BORROWED)},
    ),
    Case(
        "a full preferred flavor falls back to the next",
        snapshot(
            MIXED,
            [org("a", h100=16, a100=16)],
            [running("r", on=["h-n0", "h-n1"])],
            [pending("j", flavors=(H100, A100))],
        ),
        placed={"j": Placed(flavor=A100)},
    ),
    Case(
        "quota exhausted on one flavor, the other is used",
        snapshot(
            MIXED,
            [org("a", h100=quota(0, borrow=0), a100=quota(0, borrow=8))],
            pending=[pending("j", flavors=(H100, A100))],
        ),
        placed={"j": Placed(flavor=A100, reason=PlaceReason.BORROWED)},
    ),
    Case(
        "quotas are per flavor: full h100 quota does not block a100 work",
        snapshot(
            MIXED,
            [org("a", h100=quota(8, borrow=0), a100=8)],
            [running("r", on=["h-n0"])],
            [pending("h", submitted=0), pending("g", flavors=A100, submitted=1)],
        ),
        placed={"g": Placed(flavor=A100)},
        pending={"h": PendingReason.QUOTA},
    ),
    Case(
        "QUOTA only when every accepted flavor is at its ceiling",
        snapshot(
            MIXED,
            [org("a", h100=quota(8, borrow=0), a100=quota(8, borrow=0))],
            [running("r", on=["h-n0"]), running("s", on=["g-n0"], flavor=A100)],
            [pending("j", flavors=(H100, A100))],
        ),
        pending={"j": PendingReason.QUOTA},
    ),
    Case(
        "a multi-flavor gang lands on one flavor only",
        snapshot(
            MIXED,
            [org("a")],
            [running("r", on=["h-n0"])],
            [pending("j", replicas=2, flavors=(H100, A100))],
        ),
        placed={"j": on("g-n0", "g-n1", flavor=A100)},
    ),
]


@pytest.mark.parametrize("case", BORROWING + LENDING + FLAVORS, ids=str)
def test_quota(case: Case) -> None:
    check(case)


def test_borrowed_counts_accelerators_above_nominal() -> None:
    d = check(
        Case(
            "borrowed",
            snapshot(POOL, [org("a", h100=8)], pending=[pending("j", replicas=3)]),
            placed={"j": ANY},
        )
    )
    p = d.placed("j")
    assert p is not None and p.reason == PlaceReason.BORROWED and p.borrowed == 16
