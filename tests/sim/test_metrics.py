"""Each metric against values computed by hand on tiny records and timelines."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scheduler.sim import metrics
from scheduler.sim.failures import (
    FailureModel,
    calibrate_mtbf,
    hit_probability,
    llama3_node_mtbf,
    young_daly_loss,
)
from scheduler.sim.record import JobRecord, Timeline


def job(submit: float, duration: float, end: float | None, held: float, acc: int = 1) -> JobRecord:
    return JobRecord(
        id=f"j{submit:g}",
        org="a",
        submit=submit,
        duration=duration,
        accelerators=acc,
        nodes=1,
        first_start=submit,
        end=end,
        held_s=held,
    )


# A waits 20 s and runs 10; B waits 5 and holds 25 for 20 s of work (5 lost); C never waits.
JOBS = [job(0, 10, 30, 10), job(10, 20, 40, 25), job(20, 100, 120, 100), job(30, 50, None, 0)]


def test_jct_average_median_and_p99_over_completed_jobs() -> None:
    stats = metrics.jct_stats(JOBS)  # JCTs 30, 30, 100
    assert stats["avg"] == pytest.approx(160 / 3)
    assert stats["median"] == 30
    assert stats["p99"] == pytest.approx(30 + 0.98 * 70)  # linear interpolation at rank 1.98


def test_queueing_delay_is_all_the_time_not_holding_accelerators() -> None:
    stats = metrics.queueing_stats(JOBS)  # waits 20, 5, 0
    assert stats["avg"] == pytest.approx(25 / 3)
    assert stats["p99"] == pytest.approx(5 + 0.98 * 15)


def test_slowdown_is_jct_over_run_time_with_a_ten_second_floor() -> None:
    stats = metrics.slowdown_stats([*JOBS, job(0, 2, 20, 2)])  # 3, 1.5, 1, and 20/10 = 2
    assert stats["avg"] == pytest.approx((3 + 1.5 + 1 + 2) / 4)
    assert stats["median"] == pytest.approx(1.75)


def test_makespan_runs_from_first_submit_to_last_completion() -> None:
    assert metrics.makespan(JOBS) == 120


def timeline() -> Timeline:
    tl = Timeline(orgs=("a", "b"))
    tl.record(0, (4, 0), (6, 0), 1, (True, False))
    tl.record(10, (4, 4), (4, 4), 0, (False, False))
    tl.record(20, (0, 0), (0, 0), 0, (False, False))
    tl.end = 30
    return tl


def test_utilization_while_work_is_pending_and_over_a_window() -> None:
    arrays = timeline().arrays()
    assert metrics.utilization_while_pending(arrays, 10) == pytest.approx(0.4)  # only [0, 10) had pending
    assert metrics.utilization_in_window(arrays, 10, (0, 20)) == pytest.approx((4 * 10 + 8 * 10) / 200)
    assert metrics.utilization_in_window(arrays, 10, (5, 15)) == pytest.approx((4 * 5 + 8 * 5) / 100)


def test_offered_load_and_the_window_bound() -> None:
    jobs = [job(0, 100, 100, 100, acc=2), job(5, 4, 9, 4, acc=1)]
    assert metrics.offered_load(jobs, 4, (0, 10)) == pytest.approx((200 + 4) / 40)
    # Only work that can run inside [0, 10] counts: 2 x 10 + 1 x 4.
    assert metrics.window_bound(jobs, 4, (0, 10)) == pytest.approx(24 / 40)


def test_timeline_merges_unchanged_states_and_overwrites_same_instant() -> None:
    tl = Timeline(orgs=("a",))
    tl.record(0, (1,), (1,), 0, (False,))
    tl.record(5, (1,), (1,), 0, (False,))  # nothing changed
    tl.record(7, (2,), (2,), 0, (False,))
    tl.record(7, (3,), (3,), 0, (False,))  # same instant: last state wins
    tl.end = 10
    arrays = tl.arrays()
    assert list(arrays.start) == [0, 7] and list(arrays.dt) == [7, 3]
    assert arrays.alloc[:, 0].tolist() == [1, 3]


@pytest.mark.parametrize(
    ("nominal", "demand", "expected"),
    [
        ((6, 4), (8, 1), (8, 1)),  # b wants little: a may use the rest
        ((6, 4), (10, 10), (6, 4)),  # both want everything: nominal
        ((2, 2), (10, 3), (7, 3)),  # beyond nominal, max-min: b is capped by demand at 3
        ((2, 2), (10, 10), (5, 5)),  # equal weights split the surplus equally
    ],
)
def test_entitlement_is_nominal_then_max_min_fair_up_to_demand(
    nominal: tuple[int, int], demand: tuple[int, int], expected: tuple[int, int]
) -> None:
    tl = Timeline(orgs=("a", "b"))
    tl.record(0, (0, 0), demand, 1, (False, False))
    tl.end = 1
    ent = metrics.entitlement(tl.arrays(), 10, {"a": nominal[0], "b": nominal[1]}, {})
    assert ent[0].tolist() == pytest.approx(list(expected), abs=1e-6)


def test_share_deviation_and_jain_against_entitlement() -> None:
    tl = Timeline(orgs=("a", "b"))
    tl.record(0, (7, 3), (10, 3), 1, (False, False))  # exactly the entitlement (7, 3)
    tl.record(10, (9, 1), (10, 3), 1, (False, False))  # a holds 2 of b's entitlement
    tl.end = 20
    fair = metrics.shares(tl.arrays(), 10, {"a": 2, "b": 2}, {}, (0, 20))
    assert fair["per_org"]["a"]["share"] == pytest.approx(0.8)
    assert fair["per_org"]["a"]["entitlement"] == pytest.approx(0.7)
    assert fair["max_deviation"] == pytest.approx(0.1)
    ratios = np.array([0.8 / 0.7, 0.2 / 0.3])
    assert fair["jain"] == pytest.approx(ratios.sum() ** 2 / (2 * (ratios**2).sum()))


def test_jain_index_extremes() -> None:
    assert metrics.jain([1, 1, 1, 1]) == 1.0
    assert metrics.jain([1, 0, 0, 0]) == 0.25


def test_guarantee_violations_count_time_episodes_and_the_longest() -> None:
    tl = Timeline(orgs=("a", "b"))
    for t, flags in [(0, (True, False)), (5, (True, True)), (15, (False, False)), (20, (True, False))]:
        tl.record(t, (t, 0), (t, 0), 1, flags)  # alloc differs so every segment is kept
    tl.end = 23
    v = metrics.guarantee_violations(tl.arrays(), allowance_s=9)
    assert v["per_org_s"] == {"a": 5 + 10 + 3, "b": 10}
    assert v["org_seconds"] == 28
    assert v["episodes"] == 3  # a twice (15 s, then 3 s), b once (10 s)
    assert v["longest_s"] == 15
    assert v["episodes_over_allowance"] == 2 and v["org_seconds_over_allowance"] == (15 - 9) + (10 - 9)


def test_losses_and_goodput() -> None:
    a = job(0, 100, 150, 150, acc=2)
    a.lost_failure_acc_s = 60.0
    a.lost_preemption_acc_s = 40.0
    out = metrics.losses([a])
    assert out["lost_failure_acc_h"] == pytest.approx(60 / 3600)
    assert out["lost_preemption_acc_h"] == pytest.approx(40 / 3600)
    assert out["goodput"] == pytest.approx(200 / 300)  # 2 x 100 useful of 2 x 150 held


def test_young_daly_expected_loss_by_hand() -> None:
    model = FailureModel("mtbf", node_mtbf_s=1000.0, checkpoint_interval_s=100.0, restart_overhead_s=10.0)
    # 8 accelerators on 2 nodes for 500 s: 2 * 500 / 1000 = 1 expected failure, 100/2 + 10 lost each.
    assert young_daly_loss([(8, 2, 500.0)], model) == pytest.approx(8 * 60)
    assert young_daly_loss([(8, 2, 500.0)], FailureModel("none", None)) == 0.0


def test_calibrated_mtbf_gives_the_target_hit_rate_on_multi_hour_jobs() -> None:
    shapes = [(1, 3 * 3600.0), (2, 10 * 3600.0), (1, 100.0), (4, 50 * 3600.0)]
    mtbf = calibrate_mtbf(shapes, 0.30, 2 * 3600)
    long = [(n, d) for n, d in shapes if d >= 2 * 3600]
    rate = hit_probability(np.array([n for n, _ in long]), np.array([d for _, d in long]), mtbf).mean()
    assert rate == pytest.approx(0.30, abs=1e-6)


def test_llama3_preset_is_419_interruptions_in_54_days_on_16384_gpus() -> None:
    per_node = llama3_node_mtbf(8)
    assert 2048 * 54 * 86400 / per_node == pytest.approx(419)
    assert math.isclose(llama3_node_mtbf(4), 2 * per_node)


def _chained_reclaims() -> Timeline:
    """Org a (nominal 4): 2 owed from t=0; one more job of a ends at 60 (3 owed); at 100
    two are placed (the units owed since 0 are settled, 1 owed since 60 is left); at 200
    the last one is placed. b (nominal 4) holds its 4 throughout."""
    tl = Timeline(orgs=("a", "b"))
    tl.record(0, (2, 4), (4, 4), 2, (True, False))
    tl.record(60, (1, 4), (4, 4), 3, (True, False))
    tl.record(100, (3, 4), (4, 4), 1, (True, False))
    tl.record(200, (4, 4), (4, 4), 0, (False, False))
    tl.end = 210
    return tl


def test_reclaim_allowance_is_two_intervals_when_the_grace_is_shorter() -> None:
    assert metrics.reclaim_allowance(60, 30) == 120
    assert metrics.reclaim_allowance(60, 60) == 120
    assert metrics.reclaim_allowance(60, 90) == 60 + 90 + 60  # cycles may run during the grace


def test_guarantee_wait_gives_room_that_opens_later_its_own_clock() -> None:
    tl = _chained_reclaims().arrays()
    episodes = metrics.guarantee_violations(tl, allowance_s=120)
    assert episodes["longest_s"] == 200 and episodes["episodes_over_allowance"] == 1  # one chain
    w = metrics.guarantee_waits(tl, {"a": 4, "b": 4}, capacity=8, allowance_s=120)
    # Oldest owed: stamp 0 until 100 (wait 100), then stamp 60 until 200 (wait 140).
    assert w["longest_wait_s"] == 140
    assert w["waits_over_allowance"] == w["waits_over_allowance_feasible"] == 1
    assert w["waits_over_allowance_infeasible"] == 0
    assert w["org_seconds_over_allowance_feasible"] == pytest.approx(20 * 20 / 2)  # 120..140
    assert (
        metrics.guarantee_waits(tl, {"a": 4, "b": 4}, capacity=8, allowance_s=140)["waits_over_allowance"]
        == 0
    )


def test_guarantee_wait_keeps_aging_while_nobody_fills_the_room() -> None:
    tl = Timeline(orgs=("a",))
    tl.record(0, (3,), (4,), 1, (True,))  # 1 owed from 0
    tl.record(50, (2,), (5,), 3, (True,))  # more room and demand: 3 owed, the first still from 0
    tl.record(300, (5,), (5,), 0, (False,))
    tl.end = 310
    w = metrics.guarantee_waits(tl.arrays(), {"a": 5}, capacity=8, allowance_s=120)
    assert w["longest_wait_s"] == 300 and w["waits_over_allowance"] == 1


def test_guarantee_wait_over_committed_quotas_count_as_infeasible() -> None:
    """With capacity 7, a and b together are guaranteed 8 while both want 4: the wait
    beyond the allowance is counted apart, as infeasible."""
    tl = _chained_reclaims().arrays()
    w = metrics.guarantee_waits(tl, {"a": 4, "b": 4}, capacity=7, allowance_s=120)
    assert w["waits_over_allowance_infeasible"] == 1 and w["waits_over_allowance_feasible"] == 0
    assert w["org_seconds_over_allowance_infeasible"] == pytest.approx(200)


def test_guarantee_wait_counts_only_room_the_pending_jobs_can_fill() -> None:
    """a (nominal 16) has room 9 and 8-accelerator jobs: 8 are owed, not 9. The one left
    over is owed only from 100, when a 1-accelerator job arrives; it starts at 220. As
    recorded by the simulator (``owed``), the wait is 120 s; without it, the upper bound
    ages the ninth accelerator from 0."""
    tl = Timeline(orgs=("a",))
    tl.record(0, (7,), (23,), 2, (True,), owed=(8,))
    tl.record(60, (15,), (23,), 1, (False,), owed=(0,))
    tl.record(100, (15,), (24,), 2, (True,), owed=(1,))
    tl.record(220, (16,), (24,), 1, (False,), owed=(0,))
    tl.end = 230
    w = metrics.guarantee_waits(tl.arrays(), {"a": 16}, capacity=32, allowance_s=100)
    assert w["longest_wait_s"] == 120 and w["waits_over_allowance"] == 1
    assert w["org_seconds_over_allowance_feasible"] == pytest.approx(20 * 20 / 2)
