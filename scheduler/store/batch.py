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
import contextlib
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from scheduler.store import jobs as jobstore
from scheduler.store.db import Database
from scheduler.store.keys import among
from scheduler.store.tables import JobRow
from values.domain import JobSpec
from values.lifecycle import JobState

MAX_BATCH = 256


@dataclass
class _Item:
    spec: JobSpec
    priority: int
    now: float
    submitted_by: str | None
    client_request_id: str | None
    done: Future[jobstore.Submitted] = field(default_factory=Future)
    # Set for callers on an event loop: their result is delivered there, a whole batch
    # in one call (waking a loop from another thread is the costly part).
    loop: asyncio.AbstractEventLoop | None = None
    waiter: asyncio.Future[jobstore.Submitted] | None = None


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
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[jobstore.Submitted] = loop.create_future()
        item = _Item(spec, priority, now, submitted_by, client_request_id, loop=loop, waiter=waiter)
        self._queue.put(item)
        return await waiter

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
        try:
            with self.db.write() as s:
                outcomes = _insert_all(s, items)
            self.batches += 1
            self._deliver(list(zip(items, outcomes, strict=True)))
            return
        except IntegrityError:
            pass  # another server inserted one of these request ids meanwhile: one by one
        except Exception as exc:  # the commit itself failed: nobody's job was stored
            self._deliver([(item, exc) for item in items])
            return
        self._write_one_by_one(items)

    def _write_one_by_one(self, items: list[_Item]) -> None:
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
            self._deliver([(item, exc) for item in items])
            return
        self._deliver(results)

    def _deliver(self, results: list[tuple[_Item, jobstore.Submitted | BaseException]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Item, jobstore.Submitted | BaseException]]] = {}
        for item, outcome in results:
            if item.loop is not None:
                by_loop.setdefault(item.loop, []).append((item, outcome))
            elif isinstance(outcome, BaseException):
                item.done.set_exception(outcome)
            else:
                item.done.set_result(outcome)
        for loop, batch in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: its requests are gone
                loop.call_soon_threadsafe(_resolve, batch)


def _resolve(batch: list[tuple[_Item, jobstore.Submitted | BaseException]]) -> None:
    """Runs on the requests' event loop."""
    for item, outcome in batch:
        waiter = item.waiter
        if waiter is None or waiter.done():
            continue  # the client went away
        if isinstance(outcome, BaseException):
            waiter.set_exception(outcome)
        else:
            waiter.set_result(outcome)


def _insert_all(s: Session, items: list[_Item]) -> list[jobstore.Submitted | BaseException]:
    """Every job of the batch in two multi-row inserts; retried request ids answered
    from what is stored (or from earlier in the same batch)."""
    rids = [it.client_request_id for it in items if it.client_request_id]
    known: dict[tuple[str, str], JobRow] = {}
    if rids:
        for row in s.exec(select(JobRow).where(among(JobRow.client_request_id, rids))).all():
            known[(row.org, row.client_request_id or "")] = row
    jobs: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    out: list[jobstore.Submitted | BaseException] = []
    for it in items:
        spec_json = it.spec.model_dump_json()
        key = (it.spec.org, it.client_request_id) if it.client_request_id else None
        if key is not None and key in known:
            try:
                out.append(jobstore.same_request(known[key], spec_json))
            except jobstore.RequestConflict as exc:
                out.append(exc)
            continue
        job = jobstore.new_pending(
            it.spec, spec_json, it.priority, it.now, it.submitted_by, it.client_request_id
        )
        if key is not None:
            known[key] = job
        jobs.append(job.model_dump())
        events.append(
            jobstore.event_values(
                job, "submitted", it.now, to_state=JobState.PENDING.value, message=f"by {it.submitted_by}"
            )
        )
        out.append(jobstore.Submitted(job, True))
    if jobs:
        s.connection().execute(jobstore.INSERT_JOB, jobs)
        s.connection().execute(jobstore.INSERT_EVENT, events)
    return out
