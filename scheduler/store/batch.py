"""Group commit for submissions: one writer thread, many submissions per transaction.

Under load, fifty request threads each opening a write transaction spend their time
queueing on the database's write lock (SQLite has one writer; PostgreSQL pays a commit
flush each). Here request threads hand their job to one writer and wait; the writer
takes everything queued, inserts it in one transaction (a savepoint per job, so one
failure spoils nothing else) and commits once. Same rows, same idempotency, fewer
commits.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field

from scheduler.domain import JobSpec
from scheduler.store import jobs as jobstore
from scheduler.store.db import Database

MAX_BATCH = 256


@dataclass
class _Item:
    spec: JobSpec
    priority: int
    now: float
    submitted_by: str | None
    client_request_id: str | None
    done: Future[jobstore.Submitted] = field(default_factory=Future)


class SubmitBatcher:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.batches = 0  # transactions committed (tests and curiosity)

    def submit(
        self,
        spec: JobSpec,
        *,
        priority: int,
        now: float,
        submitted_by: str | None,
        client_request_id: str | None,
        timeout: float = 60.0,
    ) -> jobstore.Submitted:
        """Blocks until the job is committed; raises what ``jobs.submit`` would raise."""
        self._ensure_started()
        item = _Item(spec, priority, now, submitted_by, client_request_id)
        self._queue.put(item)
        return item.done.result(timeout=timeout)

    async def submit_async(
        self,
        spec: JobSpec,
        *,
        priority: int,
        now: float,
        submitted_by: str | None,
        client_request_id: str | None,
    ) -> jobstore.Submitted:
        """The same, awaited on the event loop instead of blocking a request thread."""
        self._ensure_started()
        item = _Item(spec, priority, now, submitted_by, client_request_id)
        self._queue.put(item)
        return await asyncio.wrap_future(item.done)

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=10)
            self._thread = None

    def _ensure_started(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="submit-writer", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            items = [first]
            while len(items) < MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                items.append(nxt)
            self._write(items)

    def _write(self, items: list[_Item]) -> None:
        results: list[tuple[_Item, jobstore.Submitted | BaseException]] = []
        try:
            with self.db.write() as s:
                for item in items:
                    try:
                        with s.begin_nested():
                            sub = jobstore.submit(
                                s, item.spec, priority=item.priority, now=item.now,
                                submitted_by=item.submitted_by, client_request_id=item.client_request_id,
                            )  # fmt: skip
                        results.append((item, sub))
                    except Exception as exc:  # this job only; the rest of the batch commits
                        results.append((item, exc))
            self.batches += 1
        except Exception as exc:  # the commit itself failed: nobody's job was stored
            for item in items:
                item.done.set_exception(exc)
            return
        for item, outcome in results:
            if isinstance(outcome, BaseException):
                item.done.set_exception(outcome)
            else:
                item.done.set_result(outcome)
