"""The nominal guarantee on a busy pool: room that opens inside an org's nominal goes to
that org's jobs that fit it, in the same cycle, before other orgs borrow it (issue 5: on
the Philly replay, orgs waited for their nominal quota chains of reclaims long because
borrowers took the room first)."""

from __future__ import annotations

import pytest

from values.decisions import PendingReason, PlaceReason
from values.snapshot import Policy

from .scenario import Case, check, on, org, pending, rack, running, snapshot

NODES = rack("r0", 4)  # 32 accelerators


def _room_of_one(policy: Policy | None = None) -> Case:
    """a (nominal 24) holds 23, so one accelerator of its nominal is free, on r0-n2. Its
    oldest job needs 8 (it would borrow); a newer 1-accelerator job fits the room. b
    (nominal 0) borrows a whole node and has a share far below a's, so b comes first in
    the fair order among borrowers. c's 8 are idle and lent.

    Before the fix the org's tier came from its oldest job: a was a borrowing org, b's
    1-accelerator job took the free slot as a borrower, and a's small job then had to
    reclaim b's 8-accelerator job (a preemption and two more cycles for one accelerator)."""
    return Case(
        "room inside nominal goes to the org's job that fits it before borrowers",
        snapshot(
            NODES,
            [org("a", h100=24), org("b", h100=0), org("c", h100=8)],
            [
                running("a1", "a", on=["r0-n0"]),
                running("a2", "a", on=["r0-n1"]),
                running("a3", "a", on=["r0-n2"], acc=7),
                running("b1", "b", on=["r0-n3"]),
            ],
            [
                pending("a-big", "a", acc=8, submitted=0),
                pending("a-small", "a", acc=1, submitted=1),
                pending("b-small", "b", acc=1, submitted=2),
            ],
            policy=policy,
        ),
        placed={"a-small": on("r0-n2", reason=PlaceReason.NOMINAL)},
        pending={"b-small": PendingReason.CAPACITY, "a-big": PendingReason.CAPACITY},
    )


@pytest.mark.parametrize(
    "policy",
    [Policy(backfill=False), Policy(backfill=False, priority_preemption=False)],
    ids=["trainpool-no-backfill", "kueue-like"],
)
def test_room_inside_nominal_goes_to_the_org_first(policy: Policy) -> None:
    check(_room_of_one(policy))


def test_room_inside_nominal_goes_to_the_org_first_with_backfill() -> None:
    """The default policy: the same, and nobody is preempted (the free slot is a's); b's
    job waits (it may hold the reservation: it is now the first blocked job)."""
    d = check(
        Case(
            "default policy",
            _room_of_one().snap,
            placed={"a-small": on("r0-n2", reason=PlaceReason.NOMINAL)},
        )
    )
    assert not d.preemptions


def test_within_org_order_is_kept_among_jobs_that_fit_nominal() -> None:
    """Only jobs that fit the room move ahead of the org's older job; among them priority
    then age still decide: with room for one, the older small job goes first."""
    case = _room_of_one(Policy(backfill=False))
    snap = case.snap
    extra = pending("a-small-older", "a", acc=1, submitted=0.5)
    check(
        Case(
            "older small job first",
            snapshot(snap.nodes, snap.orgs, snap.running, (*snap.pending, extra), policy=snap.policy),
            placed={"a-small-older": on("r0-n2", reason=PlaceReason.NOMINAL)},
            pending={"a-small": PendingReason.CAPACITY, "b-small": PendingReason.CAPACITY},
        )
    )


def test_reclaim_finds_a_borrowers_whole_node_job_behind_its_cheaper_scattered_ones() -> None:
    """b borrows 2. Its two newest jobs (the cheapest victims) are one accelerator each on
    nodes full of c's jobs, which stay; its one whole-node job is older. Stopping the
    scattered two frees nothing a's 2-accelerator job can use, and they use up b's 2
    borrowed accelerators: the victim search must still offer the whole-node job (a
    valid reclaim: b is borrowing until it goes). Traced on the VC subset, where a 1x8 job
    was owed its guarantee for six cycles this way."""
    from scheduler.core import decide

    nodes = [node for node in rack("r0", 3)]
    names = [n.name for n in nodes]
    orgs = [org("a", h100=2), org("b", h100=8), org("c", h100=14)]
    running_jobs = [
        running("c1", "c", {names[0]: 1}, acc=7, started=0.0),
        running("c2", "c", {names[1]: 1}, acc=7, started=0.0),
        running("b-big", "b", {names[2]: 1}, acc=8, started=100.0),
        running("b-small1", "b", {names[0]: 1}, acc=1, started=500.0),
        running("b-small2", "b", {names[1]: 1}, acc=1, started=600.0),
    ]
    job = pending("a1", "a", acc=2, submitted=700.0)
    out = decide(snapshot(nodes, orgs, running_jobs, [job]), 1_000.0)
    assert [p.job_id for p in out.preemptions] == ["b-big"]
    assert out.pending["a1"].reason is PendingReason.PREEMPTING
