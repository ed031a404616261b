"""EASY backfill and reservations, BLOCKED within an org, strict order, backoff, and the
estimated starts that come with them.

Most cases use one org entitled to the whole pool, so the head gang is blocked by nodes
(its quota is fine) and nobody reclaims: what is left is the reservation logic.
"""

from __future__ import annotations

import pytest

from scheduler.core import decide
from values.decisions import PendingReason, PlaceReason
from values.snapshot import PendingJob, Policy, Snapshot

from .scenario import (
    INF,
    Case,
    Pend,
    Placed,
    Res,
    check,
    on,
    org,
    pending,
    quota,
    rack,
    running,
    snapshot,
)

R, RF = PendingReason.RESERVED, PendingReason.RESERVED_FOR
POOL2 = rack("r0", 2)
A = [org("a", h100=16)]


def fragmented(*later: PendingJob, runtime: float | None = 1000, policy: Policy | None = None) -> Snapshot:
    """Free accelerators 4 + 2 + 2: enough in total for g (1x8), on no single node. So g
    is blocked by nodes, not quota, and reserves r0-n0 for when r1 ends (t=1000)."""
    return snapshot(
        rack("r0", 3),
        [org("a", h100=24)],
        [
            running("r1", on=["r0-n0"], acc=4, runtime=runtime),
            running("r2", on=["r0-n1"], acc=6),
            running("r3", on=["r0-n2"], acc=6),
        ],
        [pending("g", submitted=1), *later],
        policy=policy,
    )


FRAGMENTED = [
    Case(
        "the blocked head gang reserves the node it will get, and when",
        fragmented(),
        now=100,
        reserved={"g": Res(nodes=frozenset({"r0-n0"}), start_at=1000)},
        pending={"g": Pend(R, estimated_start=1000)},
    ),
    Case(
        "a short job backfills onto the held capacity: it ends before the reservation starts",
        fragmented(pending("s", acc=4, runtime=500, submitted=2)),
        now=100,
        placed={"s": on("r0-n0", reason=PlaceReason.BACKFILL)},
        pending={"g": R},
    ),
    Case(
        "ending exactly at the reservation's start is in time",
        fragmented(pending("s", acc=4, runtime=900, submitted=2)),
        now=100,
        placed={"s": on("r0-n0", reason=PlaceReason.BACKFILL)},
    ),
    Case(
        "a long job waits RESERVED_FOR the gang",
        fragmented(pending("s", acc=4, runtime=5000, submitted=2)),
        now=100,
        pending={"g": R, "s": Pend(RF, blocked_by="g")},
    ),
    Case(
        "a job without a runtime limit never backfills",
        fragmented(pending("s", acc=4, submitted=2)),
        now=100,
        pending={"s": Pend(RF, blocked_by="g")},
    ),
    Case(
        "no limits anywhere: the node is still held, with no start time",
        # Reading: a job without a limit never 'ends by' the reservation, even when the
        # reservation's start_at is infinite.
        fragmented(pending("s", acc=4, submitted=2), runtime=None),
        reserved={"g": Res(nodes=frozenset({"r0-n0"}), start_at=INF)},
        pending={"g": Pend(R, estimated_start=None, check_estimate=True), "s": Pend(RF, blocked_by="g")},
    ),
    Case(
        "one reservation per flavor: a second gang that does not fit even on held room waits",
        fragmented(pending("g2", submitted=2)),
        now=100,
        reserved={"g": Res()},
        pending={"g": R, "g2": PendingReason.CAPACITY},
    ),
    Case(
        "without backfill later jobs run freely (not strict)",
        fragmented(pending("s", acc=4, submitted=2), policy=Policy(backfill=False)),
        now=100,
        reserved={},
        placed={"s": on("r0-n0", reason=PlaceReason.NOMINAL)},
        pending={"g": PendingReason.CAPACITY},
    ),
    Case(
        "without backfill, strict order: the first blocked job blocks everything after it",
        fragmented(
            pending("s", acc=4, runtime=10, submitted=2), policy=Policy(backfill=False, strict_order=True)
        ),
        now=100,
        reserved={},
        pending={"g": PendingReason.CAPACITY},
    ),
]


def head_gang_pool(*later: PendingJob, policy: Policy | None = None) -> Snapshot:
    """n0 busy until t=1000; gang g (2x8) waits for it; ``later`` jobs come after g."""
    return snapshot(
        POOL2,
        A,
        [running("r1", on=["r0-n0"], runtime=1000)],
        [pending("g", replicas=2, submitted=1), *later],
        policy=policy,
    )


# The same rules where the pool is simply full: the common case (a big gang waiting for
# the pool to drain).
FULL = [
    Case(
        "full pool: the blocked head gang reserves the nodes it will get and when",
        head_gang_pool(),
        now=100,
        reserved={"g": Res(nodes=frozenset({"r0-n0", "r0-n1"}), start_at=1000)},
        pending={"g": Pend(R, estimated_start=1000)},
    ),
    Case(
        "full pool: the earliest time it fits: after the first releases that make room",
        snapshot(
            rack("r0", 4),
            [org("a", h100=32)],
            [
                running("e100", on=["r0-n0"], runtime=100),
                running("e200", on=["r0-n1"], runtime=200),
                running("e300", on=["r0-n2"], runtime=300),
            ],
            [pending("g", replicas=2, submitted=1)],
        ),
        now=10,
        reserved={"g": Res(nodes=frozenset({"r0-n0", "r0-n3"}), start_at=100)},
        pending={"g": Pend(R, estimated_start=100)},
    ),
    Case(
        "full pool: a short job backfills: it ends before the reservation starts",
        head_gang_pool(pending("s", runtime=500, submitted=2)),
        now=100,
        placed={"s": on("r0-n1", reason=PlaceReason.BACKFILL)},
        pending={"g": R},
    ),
    Case(
        "full pool: ending exactly at the reservation's start is in time",
        head_gang_pool(pending("s", runtime=900, submitted=2)),
        now=100,
        placed={"s": on("r0-n1", reason=PlaceReason.BACKFILL)},
    ),
    Case(
        "full pool: a long job waits RESERVED_FOR the gang",
        head_gang_pool(pending("s", runtime=5000, submitted=2)),
        now=100,
        pending={"g": R, "s": Pend(RF, blocked_by="g")},
    ),
    Case(
        "full pool: a job without a runtime limit never backfills",
        head_gang_pool(pending("s", submitted=2)),
        now=100,
        pending={"s": Pend(RF, blocked_by="g")},
    ),
    Case(
        "full pool: no limits anywhere: the nodes are still held, with no start time",
        # Reading: a job without a limit never 'ends by' the reservation, even when the
        # reservation's start_at is infinite.
        snapshot(
            POOL2, A, [running("r1", on=["r0-n0"])], [pending("g", replicas=2), pending("s", submitted=1)]
        ),
        reserved={"g": Res(nodes=frozenset({"r0-n0", "r0-n1"}), start_at=INF)},
        pending={"g": Pend(R, estimated_start=None, check_estimate=True), "s": Pend(RF, blocked_by="g")},
    ),
    Case(
        "full pool: one reservation per flavor: the second blocked gang waits",
        head_gang_pool(pending("g2", replicas=2, submitted=2)),
        now=100,
        reserved={"g": Res()},
        pending={"g": R, "g2": PendingReason.CAPACITY},
    ),
    Case(
        "full pool: without backfill later jobs run freely (not strict)",
        head_gang_pool(pending("s", submitted=2), policy=Policy(backfill=False)),
        now=100,
        reserved={},
        placed={"s": Placed(reason=PlaceReason.NOMINAL)},
    ),
    Case(
        "full pool: without backfill, strict order: the first blocked job blocks everything after it",
        head_gang_pool(
            pending("s", runtime=10, submitted=2), policy=Policy(backfill=False, strict_order=True)
        ),
        now=100,
        reserved={},
    ),
]


BLOCKED = [
    Case(
        "behind a QUOTA-blocked job of its org and flavor: BLOCKED",
        # ceiling 12: a2 (8 more) waits on quota until r1 ends at 1000; a3 (4) would fit
        # the quota but has no limit, so it could delay a2.
        snapshot(
            rack("r0", 4),
            [org("a", h100=quota(8, borrow=4))],
            [running("r1", on=["r0-n0"], runtime=1000)],
            [pending("a2", submitted=1), pending("a3", acc=4, submitted=2)],
        ),
        pending={"a2": PendingReason.QUOTA, "a3": Pend(PendingReason.BLOCKED, blocked_by="a2")},
    ),
    Case(
        "unless it ends before the blocked job could start",
        snapshot(
            rack("r0", 4),
            [org("a", h100=quota(8, borrow=4))],
            [running("r1", on=["r0-n0"], runtime=1000)],
            [pending("a2", submitted=1), pending("a3", acc=4, submitted=2, runtime=500)],
        ),
        placed={"a3": Placed()},
        pending={"a2": PendingReason.QUOTA},
    ),
    Case(
        "other orgs are not blocked",
        snapshot(
            rack("r0", 4),
            [org("a", h100=quota(8, borrow=4)), org("b")],
            [running("r1", on=["r0-n0"], runtime=1000)],
            [pending("a2", submitted=1), pending("b1", "b", acc=4, submitted=2)],
        ),
        placed={"b1": Placed()},
    ),
    Case(
        "other flavors are not blocked",
        snapshot(
            [rack("r0", 4), rack("g0", 1, flavor="a100")],
            [org("a", h100=quota(8, borrow=4), a100=8)],
            [running("r1", on=["r0-n0"], runtime=1000)],
            [pending("a2", submitted=1), pending("g1", acc=4, flavors="a100", submitted=2)],
        ),
        placed={"g1": Placed()},
    ),
]


BACKOFF = [
    Case(
        "restart backoff: not before eligible_at, which is its estimated start",
        snapshot(POOL2, A, pending=[pending("j", eligible_at=100)]),
        now=50,
        pending={"j": Pend(PendingReason.BACKOFF, estimated_start=100)},
    ),
    Case(
        "backoff over: placed",
        snapshot(POOL2, A, pending=[pending("j", eligible_at=100)]),
        now=100,
        placed={"j": Placed()},
    ),
]


@pytest.mark.parametrize("case", FRAGMENTED + BLOCKED + BACKOFF, ids=str)
def test_backfill(case: Case) -> None:
    check(case)


@pytest.mark.parametrize("case", FULL, ids=str)
def test_backfill_full_pool(case: Case) -> None:
    check(case)


def test_placement_off_the_held_nodes_is_not_backfill() -> None:
    """SEMANTICS.md: a job that uses held capacity (ending by start_at) 'is BACKFILL'.
    A 2-GPU job that fits on r0-n1's free room, outside the reservation, is NOMINAL."""
    check(
        Case(
            "not backfill",
            fragmented(pending("s", acc=2, submitted=2)),
            now=100,
            reserved={"g": Res(nodes=frozenset({"r0-n0"}))},
            placed={"s": on("r0-n1", reason=PlaceReason.NOMINAL)},
        )
    )


def test_job_within_nominal_is_never_blocked() -> None:
    """Jobs within nominal are never BLOCKED: the guarantee comes first. a holds 4 of
    nominal 8 (no borrowing): a2 (8) waits for QUOTA; a3 (4, no limit) fits within nominal
    and starts, though it could delay a2."""
    check(
        Case(
            "nominal not blocked",
            snapshot(
                rack("r0", 2),
                [org("a", h100=quota(8, borrow=0))],
                [running("r1", on=["r0-n0"], acc=4, runtime=1000)],
                [pending("a2", submitted=1), pending("a3", acc=4, submitted=2)],
            ),
            placed={"a3": Placed(reason=PlaceReason.NOMINAL)},
            pending={"a2": PendingReason.QUOTA},
        )
    )


def test_borrowing_job_behind_lending_blocked_job_is_blocked() -> None:
    """x keeps its 16 private (lends nothing), so the shared pool is 16 and a (borrow only)
    already uses 8 of it. a2 (16 more) waits for LENDING, though 24 accelerators are free;
    a3 (4, no limit) would fit the shared pool but could delay a2: BLOCKED."""
    check(
        Case(
            "blocked behind lending",
            snapshot(
                rack("r0", 4),
                [org("x", h100=quota(16, lend=0)), org("a")],
                [running("r1", on=["r0-n0"], runtime=1000)],
                [pending("a2", replicas=2, submitted=1), pending("a3", acc=4, submitted=2)],
            ),
            pending={"a2": PendingReason.LENDING, "a3": Pend(PendingReason.BLOCKED, blocked_by="a2")},
        )
    )


def test_the_reserved_head_gang_says_which_release_its_estimate_rests_on() -> None:
    # r1 started at 0 with a 1000 s limit: the reservation starts when it reaches it.
    status = decide(fragmented(), now=100).pending["g"]
    assert status.estimated_start == 1000
    assert status.message.endswith("at the latest when r1 reaches its 1000 s runtime limit"), status.message


def test_a_reservation_behind_jobs_without_limits_says_there_is_no_estimate() -> None:
    status = decide(fragmented(runtime=None), now=100).pending["g"]
    assert status.estimated_start is None
    assert "no estimate" in status.message, status.message
