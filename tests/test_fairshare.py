"""Fair-share arithmetic: half-life decay, exact decayed accumulation, weighted DRF."""

import pytest

from quota.fairshare import LN2, accumulate, decay, dominant_share

WEEK = 7 * 86_400.0


def test_usage_halves_every_half_life_and_never_grows_back() -> None:
    assert decay(100.0, WEEK, WEEK) == pytest.approx(50.0)
    assert decay(100.0, 3 * WEEK, WEEK) == pytest.approx(12.5)
    assert decay(100.0, -5.0, WEEK) == 100.0  # a clock going backwards decays nothing


def test_accumulation_is_exact_however_often_it_is_updated() -> None:
    """Holding 8 accelerators for two weeks in one step, or in 336 hourly steps, gives the
    same decayed usage: the service and the simulator update at different rates."""
    once = accumulate(0.0, 2 * WEEK, 8, WEEK)
    stepwise = 0.0
    for _ in range(336):
        stepwise = accumulate(stepwise, 3600.0, 8, WEEK)
    assert stepwise == pytest.approx(once)
    # Forever at full rate converges to rate x half_life / ln 2, the normaliser of the share.
    assert accumulate(0.0, 100 * WEEK, 8, WEEK) == pytest.approx(8 * WEEK / LN2)


def test_the_dominant_flavor_decides_and_the_weight_divides() -> None:
    capacity = {"h100": 100, "ascend": 50}
    tau_full = 50 * WEEK / LN2  # ascend used in full forever
    # 10% of h100 now; half of ascend's full-use decayed usage: ascend (0.5) dominates.
    share = dominant_share({"h100": 10}, {"ascend": tau_full / 2}, capacity, 1.0, WEEK)
    assert share == pytest.approx(0.5)
    assert dominant_share({"h100": 10}, {"ascend": tau_full / 2}, capacity, 2.0, WEEK) == pytest.approx(0.25)
    # Current allocation and past usage add up on one scale.
    assert dominant_share(
        {"h100": 20}, {"h100": 100 * WEEK / LN2 * 0.3}, capacity, 1.0, WEEK
    ) == pytest.approx(0.5)
    assert dominant_share({}, {}, {"empty": 0}, 1.0, WEEK) == 0.0
