"""Preemption beneficiaries' claims, nominated jobs, and CAPACITY vs LENDING on a full pool
(the SEMANTICS.md sections added with the core's claim bookkeeping)."""

from __future__ import annotations

import dataclasses

import pytest

from values.decisions import PendingReason, PreemptReason
from values.snapshot import PendingJob, Policy, Snapshot

from .scenario import (
    ANY,
    H100,
    INF,
    Case,
    Pend,
    Res,
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

RECLAIM = PreemptReason.RECLAIM
CAP = PendingReason.CAPACITY


def _reclaim_two_nodes(*later: PendingJob) -> Snapshot:
    """a (nominal 16) needs n0 and n1 for g; b borrows n0; n1 is free: g reclaims bv and
    claims the free n1 until bv has exited."""
    return snapshot(
        rack("r0", 2),
        [org("a", h100=16), org("b"), org("c")],
        [running("bv", "b", on=["r0-n0"])],
        [pending("g", replicas=2, submitted=0), *later],
    )


CASES = [
    Case(
        "a full pool is a CAPACITY wait (and reserves), not LENDING",
        snapshot(
            rack("r0", 2),
            [org("a", h100=8), org("b", h100=8)],
            [running("a1", "a", on=["r0-n0"]), running("b1", "b", on=["r0-n1"])],
            [pending("a2", "a")],
        ),
        reserved={"a2": Res(start_at=INF)},
        pending={"a2": PendingReason.RESERVED},
    ),
    Case(
        "a full pool without backfill: CAPACITY",
        snapshot(
            rack("r0", 2),
            [org("a", h100=8), org("b", h100=8)],
            [running("a1", "a", on=["r0-n0"]), running("b1", "b", on=["r0-n1"])],
            [pending("a2", "a")],
            policy=Policy(backfill=False),
        ),
        pending={"a2": CAP},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_full_pool(case: Case) -> None:
    check(case)


def test_beneficiary_claims_the_free_room_beside_its_victims() -> None:
    """No later job, short or not, takes n1 (the free part of g's future nodes)."""
    for runtime in (None, 1.0):
        snap = _reclaim_two_nodes(pending("s", "c", runtime=runtime, submitted=1))
        check(Case("claim", snap, preempted={"bv": (RECLAIM, "g")}, pending={"g": PendingReason.PREEMPTING}))


def test_job_blocked_by_a_claim_waits_capacity_and_reserves_none_of_its_nodes() -> None:
    check(
        Case(
            "blocked by claim",
            _reclaim_two_nodes(pending("s", "c", submitted=1)),
            preempted={"bv": (RECLAIM, "g")},
            reserved={},
            pending={"g": PendingReason.PREEMPTING, "s": Pend(CAP, blocked_by="g")},
        )
    )


def test_nominated_job_goes_first() -> None:
    """a used much (it would wait behind b), but a1's victims have exited: it is
    nominated, so the room goes to it and not to b1."""
    snap = snapshot(
        rack("r0", 1),
        [org("a"), org("b")],
        pending=[pending("a1", "a", submitted=5), pending("b1", "b", submitted=0)],
        usage={"a": {H100: 1e9}},
    )
    check(Case("fair order", snap, placed={"b1": ANY}))
    nominated = dataclasses.replace(
        snap, pending=tuple(dataclasses.replace(j, nominated=j.id == "a1") for j in snap.pending)
    )
    check(Case("nominated", nominated, placed={"a1": ANY}))


def test_claim_story_the_beneficiary_gets_what_it_was_promised() -> None:
    """Cycle 1: g reclaims bv and claims n1. Cycle 2: bv still stopping, s still waits.
    Cycle 3: bv exited (g nominated): g starts on both nodes, s keeps waiting.
    (SEMANTICS.md: 'no later job spends what J was promised, and J fits when its victims
    have exited'; reading: this holds across cycles while the victims terminate.)"""
    snap = _reclaim_two_nodes(pending("s", "c", submitted=1))
    d = check(Case("reclaim", snap, preempted={"bv": (RECLAIM, "g")}))
    snap = apply(snap, d, now=1)
    d = check(Case("stopping", snap, now=2, pending={"g": PendingReason.PREEMPTING}))
    snap = apply(snap, d, now=2)
    snap = finish(snap, "bv")
    snap = dataclasses.replace(
        snap, pending=tuple(dataclasses.replace(j, nominated=j.id == "g") for j in snap.pending)
    )
    check(Case("start", snap, now=3, placed={"g": on("r0-n0", "r0-n1")}))
