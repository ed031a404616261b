"""Reclaim (an org below nominal takes back lent capacity) and priority preemption
within an org: who is chosen, how few, and that nobody ping-pongs."""

from __future__ import annotations

import pytest

from values.decisions import PendingReason, PreemptReason
from values.snapshot import Policy

from .scenario import (
    Case,
    Pend,
    apply,
    check,
    finish,
    on,
    org,
    pending,
    rack,
    running,
    snapshot,
)

RECLAIM, PRIORITY = PreemptReason.RECLAIM, PreemptReason.PRIORITY
POOL2 = rack("r0", 2)
POOL4 = rack("r0", 4)
# a is entitled to the whole small pool; b only borrows.
LENDER = [org("a", h100=16), org("b")]

RECLAIMS = [
    Case(
        "reclaim a borrower's gang that spans several nodes",
        snapshot(POOL2, LENDER, [running("bg", "b", on=["r0-n0", "r0-n1"])], [pending("a1")]),
        preempted={"bg": (RECLAIM, "a1")},
        pending={"a1": PendingReason.PREEMPTING},
    ),
    Case(
        "a gang that fits only by preempting two victims gets exactly two, not three",
        # Victim order is b-low (frees half of n2), b1, b2. After all three it fits; b-low
        # is not needed (n0 and n1 suffice), so the minimal set drops it again.
        snapshot(
            POOL4,
            [org("a", h100=16), org("b")],
            [
                running("b-low", "b", on=["r0-n2"], acc=4, prio=100),
                running("b-keep", "b", on=["r0-n2"], acc=4, prio=1000),
                running("b1", "b", on=["r0-n0"], prio=200),
                running("b2", "b", on=["r0-n1"], prio=300),
                running("b-top", "b", on=["r0-n3"], prio=1000),
            ],
            [pending("g", replicas=2)],
        ),
        preempted={"b1": (RECLAIM, "g"), "b2": (RECLAIM, "g")},
        pending={"g": PendingReason.PREEMPTING},
    ),
    Case(
        "only borrowers are victims: a lower-priority job within its nominal is safe",
        snapshot(
            rack("r0", 3),
            [org("a", h100=8), org("b", h100=8), org("c")],
            [
                running("b-low", "b", on=["r0-n0"], prio=100),
                running("c-high", "c", on=["r0-n1"], prio=1000),
                running("c-high2", "c", on=["r0-n2"], prio=1000),
            ],
            [pending("a1")],
        ),
        preempted={"c-high": (RECLAIM, "a1")},
    ),
    Case(
        "lowest priority first",
        snapshot(
            POOL2,
            LENDER,
            [running("b-mid", "b", on=["r0-n0"], prio=500), running("b-low", "b", on=["r0-n1"], prio=100)],
            [pending("a1")],
        ),
        preempted={"b-low": (RECLAIM, "a1")},
    ),
    Case(
        "then the most recent checkpoint (least work lost)",
        snapshot(
            POOL2,
            LENDER,
            [
                running("old-ckpt", "b", on=["r0-n0"], started=0, checkpoint=100),
                running("new-ckpt", "b", on=["r0-n1"], started=0, checkpoint=900),
            ],
            [pending("a1")],
        ),
        now=1000,
        preempted={"new-ckpt": (RECLAIM, "a1")},
    ),
    Case(
        "a job without a checkpoint counts from its start",
        snapshot(
            POOL2,
            LENDER,
            [
                running("ckpt", "b", on=["r0-n0"], started=0, checkpoint=500),
                running("fresh", "b", on=["r0-n1"], started=800),
            ],
            [pending("a1")],
        ),
        now=1000,
        preempted={"fresh": (RECLAIM, "a1")},
    ),
    Case(
        "same checkpoint: the latest started",
        snapshot(
            POOL2,
            LENDER,
            [
                running("early", "b", on=["r0-n0"], started=0, checkpoint=500),
                running("late", "b", on=["r0-n1"], started=300, checkpoint=500),
            ],
            [pending("a1")],
        ),
        now=1000,
        preempted={"late": (RECLAIM, "a1")},
    ),
    Case(
        "all equal: by id",
        snapshot(
            POOL2,
            LENDER,
            [running("b2", "b", on=["r0-n0"]), running("b1", "b", on=["r0-n1"])],
            [pending("a1")],
        ),
        preempted={"b1": (RECLAIM, "a1")},
    ),
    Case(
        "an org is skipped once it is back at nominal",
        # b borrows 8 above its nominal 8: b1 goes, then b is at nominal, so b2 (lower
        # priority than d1) is spared and d1 goes.
        snapshot(
            POOL4,
            [org("a", h100=24), org("b", h100=8), org("d")],
            [
                running("b1", "b", on=["r0-n0"], prio=100),
                running("b2", "b", on=["r0-n1"], prio=100),
                running("d1", "d", on=["r0-n2"], prio=900),
            ],
            [pending("g", replicas=3)],
        ),
        preempted={"b1": (RECLAIM, "g"), "d1": (RECLAIM, "g")},
    ),
    Case(
        "non-preemptible jobs are never victims",
        snapshot(
            POOL2,
            LENDER,
            [
                running("pinned", "b", on=["r0-n0"], prio=100, preemptible=False),
                running("b2", "b", on=["r0-n1"], prio=500),
            ],
            [pending("a1")],
        ),
        preempted={"b2": (RECLAIM, "a1")},
    ),
    Case(
        "no victim set makes it fit: nobody is preempted",
        snapshot(
            POOL2,
            LENDER,
            [
                running("pinned", "b", on=["r0-n0"], preemptible=False),
                running("b2", "b", on=["r0-n1"]),
            ],
            [pending("g", replicas=2)],
        ),
    ),
    Case(
        "a job that would borrow does not reclaim",
        snapshot(
            POOL2,
            [org("a", h100=8), org("b")],
            [running("a0", "a", on=["r0-n0"]), running("b1", "b", on=["r0-n1"])],
            [pending("a1")],
        ),
    ),
    Case(
        "reclaim off",
        snapshot(
            POOL2,
            LENDER,
            [running("bg", "b", on=["r0-n0", "r0-n1"])],
            [pending("a1")],
            policy=Policy(reclaim=False),
        ),
    ),
    Case(
        "a crash-looping job in its restart backoff reclaims nothing: the borrower runs on",
        snapshot(
            POOL2, LENDER, [running("bg", "b", on=["r0-n0", "r0-n1"])], [pending("a1", eligible_at=100)]
        ),
        now=50,
        pending={"a1": Pend(PendingReason.BACKOFF, estimated_start=100)},
    ),
    Case(
        "its backoff over, the job reclaims its guarantee",
        snapshot(
            POOL2, LENDER, [running("bg", "b", on=["r0-n0", "r0-n1"])], [pending("a1", eligible_at=100)]
        ),
        now=100,
        preempted={"bg": (RECLAIM, "a1")},
        pending={"a1": PendingReason.PREEMPTING},
    ),
]

PRIORITIES = [
    Case(
        "a higher-priority job preempts the lowest-priority job of its own org",
        snapshot(
            POOL2,
            [org("a", h100=16)],
            [running("lo", on=["r0-n0"], prio=100), running("mid", on=["r0-n1"], prio=500)],
            [pending("hi", prio=1000)],
        ),
        preempted={"lo": (PRIORITY, "hi")},
        pending={"hi": PendingReason.PREEMPTING},
    ),
    Case(
        "strictly lower: equal priority is never preempted",
        snapshot(
            POOL2,
            [org("a", h100=16)],
            [running("x", on=["r0-n0"]), running("y", on=["r0-n1"])],
            [pending("j")],
        ),
    ),
    Case(
        "never across orgs",
        snapshot(
            POOL2,
            [org("a"), org("b")],
            [running("b-lo", "b", on=["r0-n0"], prio=100), running("b-lo2", "b", on=["r0-n1"], prio=100)],
            [pending("hi", prio=1000)],
        ),
    ),
    Case(
        "a job blocked by quota preempts its own lower-priority job",
        snapshot(
            POOL4,
            [org("a", h100=8)],
            [running("lo", on=["r0-n0"], prio=100)],
            [pending("hi", prio=1000)],
            policy=Policy(borrowing=False),
        ),
        preempted={"lo": (PRIORITY, "hi")},
    ),
    Case(
        "priority preemption off",
        snapshot(
            POOL2,
            [org("a", h100=16)],
            [running("lo", on=["r0-n0"], prio=100), running("lo2", on=["r0-n1"], prio=100)],
            [pending("hi", prio=1000)],
            policy=Policy(priority_preemption=False),
        ),
    ),
    Case(
        "no ping-pong: never the job named in preempted_by, another victim instead",
        snapshot(
            POOL2,
            [org("a", h100=16)],
            [running("lo", on=["r0-n0"], prio=100), running("mid", on=["r0-n1"], prio=500)],
            [pending("hi", prio=1000, preempted_by="lo")],
        ),
        preempted={"mid": (PRIORITY, "hi")},
    ),
    Case(
        "no ping-pong in reclaim either",
        snapshot(
            POOL2, LENDER, [running("bg", "b", on=["r0-n0", "r0-n1"])], [pending("a1", preempted_by="bg")]
        ),
    ),
    Case(
        "while its victims terminate the job is PREEMPTING and preempts nobody else",
        snapshot(
            POOL2,
            [org("a", h100=16)],
            [
                running("lo", on=["r0-n0"], prio=100, terminating=True, preempted_for="hi"),
                running("mid", on=["r0-n1"], prio=500),
            ],
            [pending("hi", prio=1000, replicas=2)],
        ),
        pending={"hi": PendingReason.PREEMPTING},
    ),
]


@pytest.mark.parametrize("case", RECLAIMS + PRIORITIES, ids=str)
def test_preemption(case: Case) -> None:
    check(case)


def test_reclaim_story_victim_exits_then_beneficiary_starts() -> None:
    """Cycle 1 asks the borrower to stop; cycle 2 (still terminating) does nothing new;
    cycle 3, after it exited, places the reclaimer on the freed nodes."""
    snap = snapshot(POOL2, LENDER, [running("bg", "b", on=["r0-n0", "r0-n1"])], [pending("a1", replicas=2)])
    d1 = check(Case("ask", snap, preempted={"bg": (RECLAIM, "a1")}))
    snap = apply(snap, d1, now=1)
    check(Case("wait", snap, now=2, pending={"a1": PendingReason.PREEMPTING}))
    snap = finish(snap, "bg")
    check(Case("start", snap, now=3, placed={"a1": on("r0-n0", "r0-n1")}))


def test_job_with_terminating_victims_starts_elsewhere_if_it_fits_now() -> None:
    """SEMANTICS.md: a job whose victims are still stopping is first tried like any job; if
    room came free elsewhere meanwhile (r0-n1), it starts there now instead of waiting the
    victims' grace period out. Their stop cannot be undone; their room goes back to the pool."""
    check(
        Case(
            "starts elsewhere",
            snapshot(
                POOL2,
                LENDER,
                [running("bg", "b", on=["r0-n0"], terminating=True, preempted_for="a1")],
                [pending("a1")],
            ),
            placed={"a1": on("r0-n1")},
        )
    )


def test_job_with_terminating_victims_is_preempting_while_it_does_not_fit() -> None:
    check(
        Case(
            "preempting",
            snapshot(
                POOL2,
                LENDER,
                [
                    running("bg", "b", on=["r0-n0"], terminating=True, preempted_for="a1"),
                    running("b2", "b", on=["r0-n1"]),
                ],
                [pending("a1")],
            ),
            pending={"a1": PendingReason.PREEMPTING},
        )
    )


def test_strict_order_job_with_terminating_victims_is_preempting() -> None:
    """SEMANTICS.md: while a terminating job has preempted_for == J, J is PREEMPTING. Under
    strict order an earlier blocked gang (g) holds everything behind it, but J's victims are
    already stopping for J, so J's status stays PREEMPTING (reading: the PREEMPTING rule wins
    over strict-order blocking, as it describes work already under way)."""
    check(
        Case(
            "strict preempting",
            snapshot(
                POOL2,
                LENDER,
                [
                    running("v", "b", on=["r0-n0"], terminating=True, preempted_for="j"),
                    running("y", "a", on=["r0-n1"]),
                ],
                [pending("g", replicas=2, submitted=0), pending("j", submitted=1)],
                policy=Policy(strict_order=True, backfill=False),
            ),
            pending={"j": PendingReason.PREEMPTING},
        )
    )
