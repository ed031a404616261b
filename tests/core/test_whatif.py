"""What-if on a snapshot: the same replay with and without a change, org by org."""

from __future__ import annotations

import pytest

from scheduler.sim.whatif import Change, ChangeError, apply_change, replay, side_by_side
from values.quotas import FlavorQuota
from values.snapshot import Snapshot

from .scenario import org, pending, rack, running, snapshot

HOUR = 3600.0


def busy() -> Snapshot:
    """Two nodes, both held by a's jobs for one more hour; b waits for one node."""
    return snapshot(
        rack("r0", 2),
        [org("a", h100=16), org("b")],
        [running("a1", on=["r0-n0"], runtime=2 * HOUR), running("a2", on=["r0-n1"], runtime=2 * HOUR)],
        [pending("b1", "b", runtime=HOUR, submitted=0)],
    )


def test_without_a_change_b_waits_for_a_release_and_an_added_node_starts_it_now() -> None:
    snap = busy()
    before = replay(snap, HOUR, hours=4)
    assert before.orgs["b"]["started"] == 1 and before.orgs["b"]["median_wait_h"] == pytest.approx(
        1.0, abs=0.05
    )
    after = replay(apply_change(snap, Change(add_nodes={"h100": 1})), HOUR, hours=4)
    assert after.orgs["b"]["median_wait_h"] == 0.0
    row = next(r for r in side_by_side(before, after) if r["org"] == "b")
    assert row["median_wait_h"] == before.orgs["b"]["median_wait_h"] and row["median_wait_h_changed"] == 0.0


def test_held_accelerators_follow_the_replay_to_the_horizon() -> None:
    got = replay(busy(), HOUR, hours=4)
    # a holds 16 for its last hour; b holds 8 from hour 1 to 2; nothing after: of 4 h x 16.
    assert got.orgs["a"]["avg_share"] == pytest.approx(16 * 1 / (16 * 4), abs=0.02)
    assert got.orgs["b"]["avg_share"] == pytest.approx(8 * 1 / (16 * 4), abs=0.02)


def test_a_quota_for_b_makes_it_reclaim_from_a() -> None:
    snap = snapshot(
        rack("r0", 2),
        [org("a"), org("b")],  # a borrows everything
        [running("a1", on=["r0-n0"], runtime=10 * HOUR), running("a2", on=["r0-n1"], runtime=10 * HOUR)],
        [pending("b1", "b", runtime=HOUR)],
    )
    before = replay(snap, 0.0, hours=4)
    assert before.orgs["b"]["started"] == 0 and before.orgs["a"]["preempted"] == 0
    change = Change(quotas={("b", "h100"): FlavorQuota(nominal=8)})
    after = replay(apply_change(snap, change), 0.0, hours=4)
    assert after.orgs["b"]["started"] == 1 and after.orgs["a"]["preempted"] == 1


def test_a_change_that_does_not_fit_the_snapshot_names_its_option() -> None:
    with pytest.raises(ChangeError, match="--drain: no node 'nope'"):
        apply_change(busy(), Change(drain=("nope",)))
    with pytest.raises(ChangeError, match="--set-quota: no org 'zz'"):
        apply_change(busy(), Change(quotas={("zz", "h100"): FlavorQuota()}))
    drained = apply_change(busy(), Change(drain=("r0-n0",)))
    assert [n.cordoned for n in drained.nodes] == [True, False]
