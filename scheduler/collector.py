"""A full garbage collection every minute, for the server.

The server raises the collector's thresholds (the first generation at 100,000
allocations): walking its long-lived objects every few hundred requests was most of the
API's p99. With those thresholds a full collection almost never runs, and the reference
cycles each control-loop cycle leaves behind (SQLAlchemy's rows and results) piled up:
+4 MiB/min with 400 jobs running, for as long as the server ran (found with memray;
with the interpreter's default thresholds the same server stayed flat). One full
collection a minute bounds that garbage at the price of one short pause a minute,
which ``trainpool_gc_pause_seconds`` shows.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

Observe = Callable[[float], None]


@dataclass(frozen=True)
class GcTuning:
    # The first generation at 100,000 allocations: see the module's docstring.
    thresholds: tuple[int, int, int] = (100_000, 50, 1000)
    every: float = 60.0  # seconds between full collections


def collect_every(seconds: float, stop: threading.Event, observe: Observe | None = None) -> None:
    """Run ``gc.collect()`` every ``seconds`` until ``stop`` is set."""
    while not stop.wait(seconds):
        started = time.perf_counter()
        gc.collect()
        if observe is not None:
            observe(time.perf_counter() - started)


def tune(tuning: GcTuning) -> None:
    """For a process that has built what it keeps: its objects so far are never walked
    again, and the raised thresholds apply from here on. ``collect_every`` must run
    beside it."""
    # The server holds many long-lived objects (cached specs, pending jobs); with the
    # default thresholds the collector walks them all every few hundred requests, and
    # those pauses were most of the API's p99 under load (measured: 345 -> 200 ms).
    gc.freeze()
    gc.set_threshold(*tuning.thresholds)
