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

Observe = Callable[[float], None]


def collect_every(seconds: float, stop: threading.Event, observe: Observe | None = None) -> None:
    """Run ``gc.collect()`` every ``seconds`` until ``stop`` is set."""
    while not stop.wait(seconds):
        started = time.perf_counter()
        gc.collect()
        if observe is not None:
            observe(time.perf_counter() - started)


def start_collector(seconds: float, observe: Observe | None = None) -> threading.Event:
    """``collect_every`` in a daemon thread; set the returned event to stop it."""
    stop = threading.Event()
    threading.Thread(target=collect_every, args=(seconds, stop, observe), name="gc", daemon=True).start()
    return stop
