"""When the loop cycles: the schedule on a scripted clock, then the doorbell for real
(across threads and a process, with margins wide enough for a loaded machine)."""

from __future__ import annotations

import multiprocessing as mp
import threading
import time

import pytest

from scheduler.control.wake import Doorbell, Pace, Wake, next_cycle_at

PACE = Pace(interval=1.0, batch_delay=0.025, min_gap=0.2)


@pytest.mark.parametrize(
    ("event_at", "due", "why"),
    [
        (None, 1.0, "nothing happened: the interval bounds the wait"),
        (0.01, 0.2, "an event right after a cycle waits out the minimum gap"),
        (0.5, 0.525, "a later event waits only the batching delay"),
        (0.99, 1.0, "never later than the interval"),
        (-5.0, 0.2, "an event seen during the last cycle: the next one after the gap"),
    ],
)
def test_the_next_cycle_is_due(event_at: float | None, due: float, why: str) -> None:
    assert next_cycle_at(PACE, 0.0, event_at) == pytest.approx(due), why


class ScriptedBell(Doorbell):
    """Rings at given times of a fake clock; waiting moves the clock."""

    def __init__(self, clock: list[float], rings: list[float]) -> None:
        super().__init__()
        self.clock, self.rings = clock, sorted(rings)

    def wait(self, timeout: float) -> bool:
        now = self.clock[0]
        due = [r for r in self.rings if now <= r <= now + timeout]
        if due:
            self.clock[0] = due[0]
            self.rings.remove(due[0])
            return True
        self.clock[0] = now + timeout
        return False


def cycle_after(rings: list[float], expected_at: float | None = None) -> float:
    clock = [0.0]
    wake = Wake(PACE, ScriptedBell(clock, rings), clock=lambda: clock[0])
    assert wake.wait(0.0, expected_at)
    return clock[0]


def test_a_burst_of_submissions_is_one_cycle_after_the_gap() -> None:
    assert cycle_after([0.01 + i * 0.001 for i in range(50)]) == pytest.approx(0.2)


def test_one_submission_in_a_quiet_loop_is_seen_after_the_batching_delay() -> None:
    assert cycle_after([0.6]) == pytest.approx(0.625)


def test_rings_during_the_batching_delay_do_not_push_the_cycle_back() -> None:
    assert cycle_after([0.6, 0.61, 0.62, 0.624]) == pytest.approx(0.625)


def test_with_no_event_the_loop_still_polls_every_interval() -> None:
    assert cycle_after([]) == pytest.approx(1.0)


def test_a_change_known_in_advance_counts_as_an_event_at_its_time() -> None:
    assert cycle_after([], expected_at=0.4) == pytest.approx(0.425)
    assert cycle_after([0.3], expected_at=0.7) == pytest.approx(0.325)


def test_a_stopped_wake_returns_false_without_waiting() -> None:
    wake = Wake(Pace(interval=60.0))
    wake.stop()
    started = time.monotonic()
    assert wake.wait(time.monotonic()) is False
    assert time.monotonic() - started < 1.0


# --- for real -------------------------------------------------------------------------

SLOW = Pace(interval=60.0, batch_delay=0.0, min_gap=0.0)


def test_a_ring_from_another_thread_ends_the_wait_long_before_the_interval() -> None:
    wake = Wake(SLOW)
    threading.Timer(0.2, wake.ring).start()
    started = time.monotonic()
    assert wake.wait(started)
    assert 0.15 < time.monotonic() - started < 10.0


def test_stop_from_another_thread_ends_the_wait_with_false() -> None:
    wake = Wake(SLOW)
    threading.Timer(0.2, wake.stop).start()
    assert wake.wait(time.monotonic()) is False


def test_a_ring_seen_is_cleared_so_the_next_wait_waits_again() -> None:
    wake = Wake(Pace(interval=0.3, batch_delay=0.0, min_gap=0.0))
    wake.ring()
    assert wake.wait(time.monotonic())
    started = time.monotonic()
    assert wake.wait(started)
    assert time.monotonic() - started >= 0.29  # the interval, not the old ring


def test_ringing_never_blocks_even_when_nobody_reads() -> None:
    bell = Doorbell()
    started = time.monotonic()
    for _ in range(200_000):  # far past the socket buffer
        bell.ring()
    assert time.monotonic() - started < 20.0
    assert bell.wait(0)
    bell.clear()
    assert not bell.wait(0)


def _ring_from_child(bell: Doorbell) -> None:
    time.sleep(0.2)
    bell.ring()


def test_a_ring_from_a_child_process_wakes_the_parent() -> None:
    bell = Doorbell()
    child = mp.get_context("spawn").Process(target=_ring_from_child, args=(bell,))
    child.start()
    try:
        wake = Wake(SLOW, bell)
        started = time.monotonic()
        assert wake.wait(started)
        assert time.monotonic() - started < 30.0
    finally:
        child.join(timeout=30)
    assert child.exitcode == 0
