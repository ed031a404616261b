"""Elastic gangs at admission: a gang with ``min_replicas`` below ``replicas`` starts at
the largest size that fits now, on its minimum's quota terms; all-or-nothing, quota,
rejection and reservation apply to its minimum."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.core import decide
from values.decisions import PendingReason, PlaceReason, RejectReason
from values.domain import Gang
from values.snapshot import Policy

from .scenario import (
    H100,
    Case,
    Placed,
    Res,
    check,
    org,
    pending,
    quota,
    rack,
    running,
    snapshot,
)

FOUR = rack("r0", 4)
ALL = frozenset(n.name for n in FOUR)


def size(d: object, job: str) -> int:
    (p,) = [p for p in d.placements if p.job_id == job]  # type: ignore[attr-defined]
    return sum(k for _, k in p.assignments)


CASES = [
    Case(
        "on an idle pool it takes all its replicas",
        snapshot(FOUR, [org("a", h100=32)], pending=[pending("e", replicas=4, least=2)]),
        placed={"e": Placed(on=ALL, reason=PlaceReason.NOMINAL)},
    ),
    Case(
        "with room for three of its four replicas it starts with three",
        snapshot(
            FOUR,
            [org("a", h100=32)],
            running=[running("busy", on=["r0-n0"])],
            pending=[pending("e", replicas=4, least=2)],
        ),
        placed={"e": Placed(on=ALL - {"r0-n0"})},
    ),
    Case(
        "a rigid gang of the same size waits there (for contrast)",
        snapshot(
            FOUR,
            [org("a", h100=32)],
            running=[running("busy", on=["r0-n0"])],
            pending=[pending("e", replicas=4)],
        ),
        pending={"e": PendingReason.RESERVED},
    ),
    Case(
        "extra replicas do not borrow: within a 2-node guarantee it starts with two",
        snapshot(FOUR, [org("a", h100=16), org("b", h100=16)], pending=[pending("e", replicas=4, least=1)]),
        placed={"e": Placed(reason=PlaceReason.NOMINAL)},
    ),
    Case(
        "a minimum that must borrow borrows for as many replicas as fit",
        snapshot(FOUR, [org("a", h100=0), org("b", h100=32)], pending=[pending("e", replicas=4, least=2)]),
        placed={"e": Placed(on=ALL, reason=PlaceReason.BORROWED)},
    ),
    Case(
        "below its minimum it waits and reserves room for the minimum",
        snapshot(
            FOUR,
            [org("a", h100=32)],
            running=[running("busy", on=["r0-n0", "r0-n1", "r0-n2"], runtime=600.0)],
            pending=[pending("e", replicas=4, least=2)],
        ),
        pending={"e": PendingReason.RESERVED},
        reserved={"e": Res(start_at=600.0)},
    ),
    Case(
        "a maximum larger than the pool is not rejected while its minimum fits",
        snapshot(FOUR, [org("a", h100=32)], pending=[pending("e", replicas=16, least=3)]),
        placed={"e": Placed(on=ALL)},
    ),
    Case(
        "a minimum larger than the pool is",
        snapshot(FOUR, [org("a", h100=32)], pending=[pending("e", replicas=16, least=5)]),
        rejected={"e": RejectReason.NEVER_FITS},
    ),
    Case(
        "quota is checked against the minimum: an org that may hold 2 nodes starts one",
        snapshot(FOUR, [org("a", h100=quota(16, borrow=0))], pending=[pending("e", replicas=8, least=2)]),
        placed={"e": Placed(reason=PlaceReason.NOMINAL)},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_elastic_admission(case: Case) -> None:
    d = check(case)
    if case.name.startswith("extra replicas") or case.name.startswith("quota is checked"):
        assert size(d, "e") == 2


def test_the_waiting_message_names_the_minimum() -> None:
    no_reserve = Policy(actions=tuple(a for a in Policy().actions if a != "reserve"))
    snap = snapshot(
        FOUR, [org("a", h100=32)], running=[running("busy", on=["r0-n0", "r0-n1", "r0-n2"])],
        pending=[pending("e", replicas=4, least=2)], policy=no_reserve,
    )  # fmt: skip
    assert "its minimum 2 x 8" in decide(snap, 0.0).pending["e"].message


def test_a_minimum_above_the_maximum_is_refused_naming_both() -> None:
    with pytest.raises(ValueError, match=r"min_replicas \(5\) must not exceed replicas \(4\)"):
        Gang(replicas=4, min_replicas=5, flavors=(H100,))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    busy=st.lists(st.integers(0, 8), min_size=6, max_size=6),
    most=st.integers(1, 12),
    least=st.integers(1, 12),
    per=st.sampled_from([1, 2, 4, 8]),
)
def test_it_starts_at_the_largest_size_that_fits(busy: list[int], most: int, least: int, per: int) -> None:
    # Six nodes of 8 with some accelerators taken: the elastic gang starts with k in
    # [least, most] replicas where one more would not fit, or waits where its least
    # does not fit (what a rigid gang of each size does on the same pool).
    least = min(least, most)
    nodes = rack("r0", 6)
    taken = [
        running(f"t{i}", on={n.name: b}, acc=1) for i, (n, b) in enumerate(zip(nodes, busy, strict=True)) if b
    ]
    pool = [org("a", h100=1000)]

    def rigid_fits(k: int) -> bool:
        snap = snapshot(nodes, pool, running=taken, pending=[pending("r", replicas=k, acc=per)])
        return any(p.job_id == "r" for p in decide(snap, 0.0).placements)

    snap = snapshot(nodes, pool, running=taken, pending=[pending("e", replicas=most, least=least, acc=per)])
    placed = [p for p in decide(snap, 0.0).placements if p.job_id == "e"]
    if not rigid_fits(least):
        assert not placed
        return
    (p,) = placed
    k = sum(n for _, n in p.assignments)
    assert least <= k <= most and rigid_fits(k)
    assert k == most or not rigid_fits(k + 1)
