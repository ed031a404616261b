"""Effective training time, pure: what an attempt's held time splits into."""

from __future__ import annotations

from values.goodput import Attempt, account


def test_a_job_that_ran_through_keeps_everything_after_its_startup() -> None:
    g = account([Attempt(0, 8, held_from=0, held_until=1000, running_from=100, last_checkpoint_at=None)])
    assert (g.held, g.productive, g.lost) == (8000, 7200, {"startup": 800})
    assert g.ratio == 0.9


def test_an_interrupted_attempt_loses_what_came_after_its_last_checkpoint_under_its_reason() -> None:
    g = account([
        Attempt(0, 8, held_from=0, held_until=1000, running_from=100, last_checkpoint_at=700, lost_to="hang"),
        Attempt(1, 8, held_from=1000, held_until=2000, running_from=1050, last_checkpoint_at=None),
    ])  # fmt: skip
    # attempt 0: 100 startup, 300 lost to the hang, 600 kept; attempt 1: 50 overhead, 950 kept.
    assert g.lost == {"startup": 800, "hang": 2400, "restart_overhead": 400}
    assert (g.productive, round(g.ratio or 0, 4)) == (8 * 1550, 0.775)


def test_without_a_checkpoint_the_whole_run_is_lost_and_a_gang_that_never_ran_is_all_overhead() -> None:
    g = account([
        Attempt(0, 4, held_from=0, held_until=500, running_from=100, last_checkpoint_at=None,
                lost_to="preemption"),
        Attempt(1, 4, held_from=600, held_until=700, running_from=None, last_checkpoint_at=None,
                lost_to="failure"),
    ])  # fmt: skip
    assert (g.productive, g.lost) == (0, {"startup": 400, "preemption": 1600, "restart_overhead": 400})


def test_a_window_counts_only_the_time_inside_it() -> None:
    a = Attempt(
        0, 1, held_from=0, held_until=1000, running_from=100, last_checkpoint_at=600, lost_to="straggler"
    )
    g = account([a], since=500, until=800)
    assert (g.held, g.productive, g.lost) == (300, 100, {"straggler": 200})
    assert account([a], since=2000).ratio is None  # nothing held in it
