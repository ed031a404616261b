"""Elastic gangs at admission: a gang with ``min_replicas`` below ``replicas`` starts at
the largest size that fits now, on its minimum's quota terms; all-or-nothing, quota,
rejection and reservation apply to its minimum."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.core import decide
from values.decisions import PendingReason, PlaceReason, PreemptReason, RejectReason
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


# -- shrink: an elastic gang gives up its surplus before anyone is stopped whole ---------

N = [n.name for n in FOUR]


def stops(
    snap: object, now: float = 0.0
) -> dict[str, tuple[PreemptReason, str | None, tuple[tuple[str, int], ...]]]:
    return {p.job_id: (p.reason, p.beneficiary, p.keep) for p in decide(snap, now).preemptions}  # type: ignore[arg-type]


def test_a_borrowing_elastic_gang_is_shrunk_to_its_minimum_for_a_reclaim() -> None:
    snap = snapshot(
        FOUR, [org("a", h100=16), org("b", h100=16)],
        running=[running("eb", "b", on=N, most=4, least=2)],
        pending=[pending("ja", "a", replicas=2)],
    )  # fmt: skip
    assert stops(snap) == {"eb": (PreemptReason.RECLAIM, "ja", ((N[0], 1), (N[1], 1)))}
    (p,) = decide(snap, 0.0).preemptions
    assert "shrinks to 2 of 4 replicas" in p.message


def test_it_is_shrunk_before_a_rigid_job_that_would_lose_less_is_stopped_whole() -> None:
    # Both b's jobs borrow; the rigid one checkpointed last (cheaper to stop whole), yet
    # the elastic gang gives up a replica instead.
    snap = snapshot(
        FOUR, [org("a", h100=16), org("b", h100=16)],
        running=[
            running("rb", "b", on=N[:2], checkpoint=90.0),
            running("eb", "b", on=N[2:], most=2, least=1, checkpoint=10.0),
        ],
        pending=[pending("ja", "a")],
    )  # fmt: skip
    assert stops(snap, 100.0) == {"eb": (PreemptReason.RECLAIM, "ja", ((N[2], 1),))}


def test_for_contrast_a_rigid_gang_there_is_stopped_whole() -> None:
    snap = snapshot(
        FOUR, [org("a", h100=16), org("b", h100=16)],
        running=[
            running("rb", "b", on=N[:2], checkpoint=90.0), running("eb", "b", on=N[2:], checkpoint=10.0)
        ],
        pending=[pending("ja", "a")],
    )  # fmt: skip
    assert stops(snap, 100.0) == {"rb": (PreemptReason.RECLAIM, "ja", ())}


def test_a_gang_at_its_minimum_is_stopped_whole() -> None:
    snap = snapshot(
        FOUR, [org("a", h100=32), org("b", h100=0)],
        running=[running("eb", "b", on=N, most=8, least=4)],
        pending=[pending("ja", "a", replicas=2)],
    )  # fmt: skip
    assert stops(snap) == {"eb": (PreemptReason.RECLAIM, "ja", ())}


# -- grow: into room nobody waits for, within nominal, not before grow_after_seconds ---


def growing(*pending_jobs: object, nominal: int = 32, now: float = 2000.0) -> dict[str, object]:
    snap = snapshot(
        FOUR, [org("a", h100=nominal), org("b", h100=0)],
        running=[running("e", on=N[:2], most=4, least=1)],
        pending=list(pending_jobs),  # type: ignore[arg-type]
    )  # fmt: skip
    return {p.job_id: p for p in decide(snap, now).preemptions}


def test_an_elastic_gang_grows_into_idle_room_keeping_its_ranks() -> None:
    (p,) = growing().values()  # type: ignore[misc]
    assert (p.reason, p.beneficiary, p.keep) == (PreemptReason.GROW, None, ((N[0], 1), (N[1], 1)))
    assert "grows from 2 to 4 of 4 replicas" in p.message


def test_extra_replicas_do_not_borrow_it_grows_to_its_nominal() -> None:
    (p,) = growing(nominal=24).values()  # type: ignore[misc]
    assert "grows from 2 to 3 of 4" in p.message


def test_it_does_not_grow_before_grow_after_seconds() -> None:
    assert growing(now=1000.0) == {}


def test_it_does_not_grow_into_room_a_pending_job_waits_for() -> None:
    # b's three-node job cannot start on the two idle nodes: that room is what it waits for.
    assert growing(pending("big", "b", replicas=3)) == {}


def test_it_grows_when_the_pending_job_waits_for_another_flavor() -> None:
    snap = snapshot(
        [FOUR, rack("x", 1, flavor="a100")], [org("a", h100=32, a100=16), org("b", h100=0)],
        running=[running("e", on=N[:2], most=4, least=1), running("busy", on=["x-n0"], flavor="a100")],
        pending=[pending("other", "a", flavors="a100")],
    )  # fmt: skip
    d = decide(snap, 2000.0)
    assert d.pending["other"].reason is PendingReason.RESERVED  # it waits, on a100
    assert [(p.job_id, p.reason) for p in d.preemptions] == [("e", PreemptReason.GROW)]


def test_the_forecast_brings_a_shrunk_gang_back_at_its_minimum_beside_the_job_it_made_room_for() -> None:
    # The reclaim shrinks b's gang to two; in the forecast, as in the loop, the gang comes
    # back first at two (not four, which would take the room back), and a's job starts.
    from scheduler.core.forecast import Budget, forecast

    snap = snapshot(
        FOUR, [org("a", h100=16), org("b", h100=16)],
        running=[running("eb", "b", on=N, most=4, least=2, runtime=10_000.0)],
        pending=[pending("ja", "a", replicas=2, runtime=600.0)],
    )  # fmt: skip
    seen: list[object] = []

    def watched(s: object, t: float) -> object:
        seen.extend(p for p in s.pending if p.id == "eb")  # type: ignore[attr-defined]
        return decide(s, t)  # type: ignore[arg-type]

    got = forecast(snap, 0.0, budget=Budget(steps=8), high=None, decide=watched)  # type: ignore[arg-type]
    back = seen[0]
    assert (back.nominated, back.resize_to, back.prefer_nodes) == (True, 2, (N[0], N[1]))  # type: ignore[attr-defined]
    est = got.estimates["ja"]
    assert est.start is not None and est.start <= 60.0, est  # after eb's 30 s grace
