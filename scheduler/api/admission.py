"""Submit refuses a job the pool can never run (``scheduler.core.admission``), reading
the pool's shape (nodes, orgs, quotas) from the store at most every few seconds and
answering each job shape once per read: the submit path stays a cache hit."""

from __future__ import annotations

import threading
import time

from sqlmodel import Session

from scheduler.core.admission import never_runs
from scheduler.store import nodes as nodestore
from scheduler.store import orgs as orgstore
from scheduler.store.db import Database
from scheduler.store.view import PoolView, flavors_of
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

    def stale(self) -> bool:
        return time.monotonic() - self._read_at > self.refresh

    def read(self, db: Database, view: PoolView) -> None:
        """In a worker thread: the pool's shape as stored now."""
        with db.read() as s:
            pool = _pool_of(s, view)
        with self._lock:
            self._pool, self._read_at, self._answers = pool, time.monotonic(), {}

    def problem(self, spec: JobSpec, priority: int) -> Rejection | None:
        """None also when the loop has not synced any node yet: nothing to judge by."""
        pool = self._pool
        if pool is None or not pool.nodes:
            return None
        key = (spec.org, spec.gang, spec.topology, priority)
        if key not in self._answers:
            self._answers[key] = never_runs(pool, spec, priority)
        return self._answers[key]


def _pool_of(s: Session, view: PoolView) -> Snapshot:
    return Snapshot(
        flavors=flavors_of(s, view),
        nodes=tuple(nodestore.to_node(r) for r in nodestore.list_nodes(s)),
        orgs=orgstore.domain_orgs(s),
        policy=view.policy,
    )
