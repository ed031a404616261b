"""The progress rules, pure: when a rank's clock restarts, when a gang is hung, when a
rank is a straggler (with hysteresis) and when moving its gang pays."""

from __future__ import annotations

import pytest

from values.progress import GangProgress, ProgressRule, RankReport, advance, hang, straggler

RULE = ProgressRule(hang_factor=10, hang_floor_seconds=60, straggler_ratio=1.5, straggler_after_seconds=100,
                    restart_overhead_seconds=30)  # fmt: skip


def reports(steps: list[int], seconds: list[float] | None = None) -> list[RankReport]:
    times = seconds or [1.0] * len(steps)
    return [
        RankReport(rank, step, t, f"n{rank}") for rank, (step, t) in enumerate(zip(steps, times, strict=True))
    ]


def test_a_ranks_clock_restarts_only_when_its_step_rises_and_a_new_attempt_starts_afresh() -> None:
    assert advance(None, 0, [], 0.0, RULE) is None
    p = advance(None, 0, reports([5, 5]), 10.0, RULE)
    assert p is not None and (p.first_step, p.first_at, p.last_advance) == (5, 10.0, 10.0)
    p = advance(p, 0, reports([5, 9]), 20.0, RULE)
    assert p is not None and [r.advanced_at for r in p.ranks] == [10.0, 20.0] and p.step == 5
    p = advance(p, 0, [], 30.0, RULE)  # nothing new reported: nothing changes
    assert p is not None and p.last_advance == 10.0
    fresh = advance(p, 1, reports([0, 0]), 40.0, RULE)
    assert fresh is not None and (fresh.attempt, fresh.first_at, fresh.last_advance) == (1, 40.0, 40.0)
    assert GangProgress.from_dict(fresh.to_dict()) == fresh


def test_a_gang_is_hung_when_its_stalest_rank_is_silent_past_the_limit() -> None:
    assert hang(None, 1e9, RULE) is None  # never reported: never hung
    p = advance(None, 0, reports([1, 1], [2.0, 2.0]), 0.0, RULE)
    assert hang(p, 60.0, RULE) is None  # the floor: max(10 x 2 s, 60 s)
    p = advance(p, 0, reports([1, 2], [2.0, 2.0]), 30.0, RULE)
    h = hang(p, 61.0, RULE)
    assert h is not None and (h.rank, h.node, h.silent_seconds, h.limit_seconds) == (0, "n0", 61.0, 60.0)
    slow = advance(None, 0, reports([1, 1], [30.0, 30.0]), 0.0, RULE)
    assert hang(slow, 299.0, RULE) is None and hang(slow, 301.0, RULE) is not None  # 10 x 30 s


def test_a_rank_is_a_straggler_from_the_ratio_and_until_it_falls_below_halfway_back() -> None:
    p = advance(None, 0, reports([1, 1, 1], [1.0, 1.0, 1.6]), 0.0, RULE)
    assert p is not None and p.ranks[2].slow_since == 0.0
    p = advance(p, 0, reports([2, 2, 2], [1.0, 1.0, 1.3]), 10.0, RULE)  # between 1.25 and 1.5: still slow
    assert p is not None and p.ranks[2].slow_since == 0.0
    assert straggler(p, 99.0, RULE, since_checkpoint=0.0) is None  # not slow for 100 s yet
    verdict = straggler(p, 100.0, RULE, since_checkpoint=0.0)
    assert verdict is not None and (verdict.rank, verdict.node, verdict.ratio) == (2, "n2", 1.3)
    p = advance(p, 0, reports([3, 3, 3], [1.0, 1.0, 1.2]), 120.0, RULE)  # recovered
    assert p is not None and p.ranks[2].slow_since is None and straggler(p, 500.0, RULE, 0.0) is None


def test_moving_a_straggler_pays_once_the_time_lost_to_it_reaches_what_a_move_costs() -> None:
    p = advance(None, 0, reports([1, 1], [1.0, 2.0]), 0.0, RULE)  # half the gang's time lost
    early = straggler(p, 100.0, RULE, since_checkpoint=40.0)
    assert early is not None and (early.lost_seconds, early.move_cost_seconds, early.move) == (
        50.0,
        70.0,
        False,
    )
    later = straggler(p, 140.0, RULE, since_checkpoint=40.0)
    assert later is not None and later.move  # 70 s lost against 70 s to move
    never = straggler(p, 1000.0, RULE, since_checkpoint=1000.0)  # no checkpoint: a move loses it all
    assert never is not None and not never.move


def test_one_rank_alone_has_no_peers_to_be_slower_than() -> None:
    p = advance(None, 0, [RankReport(0, 1, 5.0)], 0.0, RULE)
    assert p is not None and p.ranks[0].slow_since is None


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [("hang_factor", 0.5, "greater than or equal to 1"), ("straggler_ratio", 1.0, "greater than 1"),
     ("straggler_min_ranks", 1, "greater than or equal to 2"), ("hang_after", 5, "Extra inputs")],
)  # fmt: skip
def test_a_bad_rule_names_its_field(field: str, value: float, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as err:
        ProgressRule.model_validate({field: value})
    assert field in str(err.value)
