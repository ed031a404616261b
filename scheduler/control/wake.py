"""When the control loop cycles next: soon after something happened, never back to back,
and at least every ``interval``.

Whatever changes what the loop would decide (a submission, a cancel, a cordon, a health
verdict) rings a doorbell. The first ring after a cycle starts a short batching delay, so
that a burst of submissions is one cycle; a cycle never starts sooner than ``min_gap``
after the last one ended; and with no ring at all the loop still cycles every
``interval``, because backends are polled (their exits are seen only when the loop looks).

The doorbell is a socket pair: ringing is one non-blocking send (a full buffer means a
ring is already waiting), so it never blocks the API, and both ends travel to a child
process, so a ring crosses the process boundary with no shared lock that a killed
process could leave held.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Pace:
    # The upper bound: how stale the loop's view of the backend may get with nothing
    # else happening (exits, lost nodes are seen by polling). Shorter costs an idle
    # cycle's CPU and database reads more often.
    interval: float = 1.0
    # A client's burst arrives within tens of milliseconds; 25 ms gathers ~25-50
    # submissions at the API's rate into one cycle, for at most 25 ms of added wait.
    batch_delay: float = 0.025
    # Caps a steady stream of events at ~5 cycles a second: each cycle takes a core and
    # the database's write lock (SQLite has one writer) from the API for its duration.
    # Shorter admits short jobs sooner; longer leaves the API more of the machine.
    min_gap: float = 0.2

    def __post_init__(self) -> None:
        if not (self.interval > 0 and self.batch_delay >= 0 and self.min_gap >= 0):
            raise ValueError(f"pace: interval must be > 0, delays >= 0 (got {self})")


def next_cycle_at(pace: Pace, last_end: float, event_at: float | None) -> float:
    """When the next cycle starts, given when the last one ended and when the first
    event since then came (None: none yet). All times on one clock."""
    latest = last_end + pace.interval
    if event_at is None:
        return latest
    return min(latest, max(event_at + pace.batch_delay, last_end + pace.min_gap))


class Doorbell:
    """A socket pair: ``ring`` from any thread or process holding it, ``wait`` and
    ``clear`` where the loop runs. Picklable for ``multiprocessing`` spawn (its sockets
    are duplicated into the child)."""

    def __init__(self) -> None:
        self._rx, self._tx = socket.socketpair()
        self._rx.setblocking(False)
        self._tx.setblocking(False)

    def __setstate__(self, state: dict[str, socket.socket]) -> None:
        # The sockets arrive in a child as new objects over duplicated descriptors.
        self.__dict__.update(state)
        self._rx.setblocking(False)
        self._tx.setblocking(False)

    def ring(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):  # full: a ring already waits
            self._tx.send(b"\0")

    def wait(self, timeout: float) -> bool:
        """True once rung (and not cleared since), False after ``timeout`` seconds."""
        readable, _, _ = select.select([self._rx], [], [], max(0.0, timeout))
        return bool(readable)

    def clear(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._rx.recv(4096):
                pass

    def close(self) -> None:
        self._rx.close()
        self._tx.close()


class Wake:
    """The loop's side: ``wait`` blocks until the next cycle is due (``next_cycle_at``)
    or ``stop`` is called, from any thread or a signal handler."""

    def __init__(
        self,
        pace: Pace | None = None,
        doorbell: Doorbell | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pace = pace or Pace()
        self.doorbell = doorbell or Doorbell()
        self.clock = clock
        self._stopped = threading.Event()

    def ring(self) -> None:
        self.doorbell.ring()

    def stop(self) -> None:
        self._stopped.set()
        self.doorbell.ring()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def wait(self, last_end: float, expected_at: float | None = None) -> bool:
        """Block until the next cycle is due after one that ended at ``last_end``;
        ``expected_at`` is a change known in advance (a backend's next exit), counted as
        an event at that time. False once stopped.

        A ring is cleared when it is first seen, so one that comes while the cycle runs
        rings again for the cycle after."""
        event_at = expected_at
        while not self.stopped:
            remaining = next_cycle_at(self.pace, last_end, event_at) - self.clock()
            if remaining <= 0:
                return True
            if self.doorbell.wait(remaining):
                self.doorbell.clear()
                now = self.clock()
                event_at = now if event_at is None else min(event_at, now)
        return False
