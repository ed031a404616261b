"""decide() leaves the garbage collector to the process: the API's threads share it, so a
cycle must not switch it off for everyone while it runs."""

from __future__ import annotations

import gc

from scheduler.core import decide

from .scenario import org, pending, rack, snapshot


def test_the_collector_runs_while_a_cycle_decides() -> None:
    jobs = [pending(f"j{i}", submitted=float(i), acc=1) for i in range(2_000)]
    snap = snapshot(rack("r0", 4), [org("a", h100=32)], [], jobs)
    seen: list[bool] = []

    def watch(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            seen.append(gc.isenabled())

    before = gc.get_threshold()
    gc.set_threshold(50)  # a collection every few allocations: some fall inside the cycle
    gc.callbacks.append(watch)
    try:
        out = decide(snap, 10_000.0)
    finally:
        gc.callbacks.remove(watch)
        gc.set_threshold(*before)
    assert len(out.placements) == 32
    assert seen and all(seen)  # collections ran during the cycle, with the collector on
