"""The server's raised GC thresholds make full collections rare; its collector thread
still frees reference cycles within its period (without it, the cycles each control-loop
cycle left behind piled up for as long as the server ran)."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Iterator

import pytest

from scheduler.collector import collect_every


class Node:
    def __init__(self) -> None:
        self.peer: Node | None = None


@pytest.fixture
def server_thresholds() -> Iterator[None]:
    before = gc.get_threshold()
    gc.set_threshold(100_000, 50, 1000)  # the server's tuned default
    try:
        yield
    finally:
        gc.set_threshold(*before)


def _cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.peer, b.peer = b, a
    return weakref.ref(a)


def test_cyclic_garbage_is_freed_within_the_collectors_period(server_thresholds: None) -> None:
    pauses: list[float] = []
    stop = threading.Event()
    threading.Thread(target=collect_every, args=(0.2, stop, pauses.append), daemon=True).start()
    try:
        ref = _cycle()
        deadline = time.monotonic() + 5
        while (ref() is not None or not pauses) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ref() is None, "the cycle outlived the collector's runs"
        # Each run's pause is measured (a full collection of a large test worker's heap on
        # a loaded machine took over a second once: the bound is loose on purpose).
        assert pauses and all(0 <= p < 5 for p in pauses)
    finally:
        stop.set()


def test_without_the_collector_the_same_garbage_stays(server_thresholds: None) -> None:
    """The control: with these thresholds nothing else frees it in the same time."""
    gc.collect()
    ref = _cycle()
    time.sleep(0.5)
    assert ref() is not None
    gc.collect()
    assert ref() is None
