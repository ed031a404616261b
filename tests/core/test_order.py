"""Order: fair share across orgs (tiers, weighted dominant share, decayed usage), priority
then age within an org, and the FIFO and PRIORITY orderings."""

from __future__ import annotations

import math

import pytest

from values.snapshot import Ordering, Policy

from .scenario import ANY, H100, Case, check, org, pending, rack, snapshot

HALF_LIFE = Policy().half_life_seconds


def usage_for_share(share: float, cap: int) -> float:
    """Decayed accelerator-seconds that count as ``share`` of a pool of ``cap``."""
    return share * cap * HALF_LIFE / math.log(2)


def queue(org_name: str, n: int, *, start: float = 0.0) -> list:
    return [pending(f"{org_name}{i}", org_name, submitted=start + i) for i in range(1, n + 1)]


THREE = rack("r0", 3)  # 24 accelerators, three 8-accelerator slots
FOUR = rack("r0", 4)

CASES = [
    Case(
        "orgs with equal shares interleave (ties by org name)",
        snapshot(THREE, [org("a"), org("b")], pending=queue("a", 3) + queue("b", 3)),
        placed={"a1": ANY, "b1": ANY, "a2": ANY},
    ),
    Case(
        "submit time does not beat fair share across orgs",
        snapshot(THREE, [org("a"), org("b")], pending=queue("a", 3, start=10) + queue("b", 3)),
        placed={"a1": ANY, "b1": ANY, "a2": ANY},
    ),
    Case(
        "an org that used much last week waits behind one that used little",
        # a's decayed usage counts as half the pool; b starts at 0 and passes a only
        # after two placements (2/3 > 1/2).
        snapshot(
            THREE,
            [org("a"), org("b")],
            pending=queue("a", 3) + queue("b", 3),
            usage={"a": {H100: usage_for_share(0.5, 24)}},
        ),
        placed={"b1": ANY, "b2": ANY, "a1": ANY},
    ),
    Case(
        "decayed usage adds to the share like held capacity",
        snapshot(
            THREE,
            [org("a"), org("b")],
            pending=queue("a", 3) + queue("b", 3),
            usage={"b": {H100: usage_for_share(0.4, 24)}},
        ),
        # a1 (0 < 0.4), a2 (1/3 < 0.4), then a's 2/3 > b's 0.4: b1.
        placed={"a1": ANY, "a2": ANY, "b1": ANY},
    ),
    Case(
        "weights scale the share: weight 3 gets three of four slots",
        snapshot(FOUR, [org("a", weight=3.0), org("b")], pending=queue("a", 4) + queue("b", 4)),
        placed={"a1": ANY, "b1": ANY, "a2": ANY, "a3": ANY},
    ),
    Case(
        "tier first: a job within nominal goes before borrowers, whatever the usage",
        snapshot(
            rack("r0", 1),
            [org("a", h100=8), org("b")],
            pending=[pending("a1", "a"), pending("b1", "b")],
            usage={"a": {H100: usage_for_share(5.0, 8)}},
        ),
        placed={"a1": ANY},
    ),
    Case(
        "within an org: priority first",
        snapshot(
            rack("r0", 1),
            [org("a")],
            pending=[pending("old", submitted=0), pending("urgent", prio=1000, submitted=5)],
        ),
        placed={"urgent": ANY},
    ),
    Case(
        "within an org: then age",
        snapshot(
            rack("r0", 1),
            [org("a")],
            pending=[pending("young", submitted=5), pending("old", submitted=1)],
        ),
        placed={"old": ANY},
    ),
    Case(
        "within an org: then id",
        snapshot(
            rack("r0", 1),
            [org("a")],
            pending=[pending("j2", submitted=1), pending("j1", submitted=1)],
        ),
        placed={"j1": ANY},
    ),
    Case(
        "FIFO: one global queue by submit time, blind to orgs and usage",
        snapshot(
            rack("r0", 1),
            [org("a"), org("b")],
            pending=[pending("a1", "a", submitted=2), pending("b1", "b", submitted=1)],
            usage={"b": {H100: usage_for_share(5.0, 8)}},
            policy=Policy(ordering=Ordering.FIFO),
        ),
        placed={"b1": ANY},
    ),
    Case(
        "PRIORITY: org-blind priority, then submit time",
        snapshot(
            rack("r0", 1),
            [org("a", h100=8), org("b")],
            pending=[pending("a1", "a", submitted=1), pending("b1", "b", prio=1000, submitted=2)],
            policy=Policy(ordering=Ordering.PRIORITY),
        ),
        placed={"b1": ANY},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_order(case: Case) -> None:
    check(case)


def test_fifo_ignores_priority() -> None:
    """SEMANTICS.md: FIFO is 'one global queue by submitted_at, then id' (the Ordering
    enum's comment says 'priority, then submit time'; the contract's reading is tested)."""
    check(
        Case(
            "fifo",
            snapshot(
                rack("r0", 1),
                [org("a")],
                pending=[pending("early", submitted=1), pending("urgent", prio=1000, submitted=2)],
                policy=Policy(ordering=Ordering.FIFO),
            ),
            placed={"early": ANY},
        )
    )


def test_share_is_recomputed_after_every_placement() -> None:
    """With a big pool the fair order shows in the placement list: orgs alternate."""
    snap = snapshot(rack("r0", 8), [org("a"), org("b")], pending=queue("a", 4) + queue("b", 4))
    d = check(Case("alternate", snap, placed={j.id: ANY for j in snap.pending}))
    assert [p.job_id for p in d.placements] == ["a1", "b1", "a2", "b2", "a3", "b3", "a4", "b4"]
