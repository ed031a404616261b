"""Submit refuses a job the pool can never run (``scheduler.core.admission``), reading
the pool's shape (nodes, orgs, quotas) from the store at most every few seconds and
answering each job shape once per read: the submit path stays a cache hit."""

from __future__ import annotations

import threading
import time

from scheduler.core.admission import never_runs
from scheduler.store.db import Database
from scheduler.store.view import PoolView, pool_shape
from values.decisions import Rejection
from values.domain import JobSpec
from values.snapshot import Snapshot

# A quota or node change reaches submit within this long (the loop sees it sooner).
REFRESH_SECONDS = 5.0


class Admission:
    def __init__(self, refresh: float = REFRESH_SECONDS) -> None:
        self.refresh = refresh
        self._pool: Snapshot | None = None
        self._read_at = -float("inf")
        self._answers: dict[tuple[object, ...], Rejection | None] = {}
        self._lock = threading.Lock()

    def known(self, spec: JobSpec, priority: int) -> tuple[bool, Rejection | None]:
        """(answered, rejection) from what was read, without I/O or a decide: the event
        loop's part. Not answered: ask ``problem`` in a worker thread."""
        if time.monotonic() - self._read_at > self.refresh:
            return False, None
        key = _key(spec, priority)
        return (True, self._answers[key]) if key in self._answers else (False, None)

    def problem(self, db: Database, view: PoolView, spec: JobSpec, priority: int) -> Rejection | None:
        """In a worker thread: re-reads the pool's shape if stale, then judges. None also
        when the loop has not synced any node yet: nothing to judge by."""
        if time.monotonic() - self._read_at > self.refresh:
            with db.read() as s:
                fresh = pool_shape(s, view)
            with self._lock:
                self._pool, self._read_at, self._answers = fresh, time.monotonic(), {}
        pool, answers = self._pool, self._answers
        if pool is None or not pool.nodes:
            return None
        key = _key(spec, priority)
        if key not in answers:
            answers[key] = never_runs(pool, spec, priority)
        return answers[key]


def _key(spec: JobSpec, priority: int) -> tuple[object, ...]:
    return (spec.org, spec.gang, spec.topology, priority)
