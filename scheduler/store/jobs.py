"""Jobs: idempotent submission, queries, and guarded state changes.

Every state change goes through :func:`move`: the lifecycle table decides whether the
move is legal, a compare-and-set on ``version`` decides whether this writer still holds
the row as it read it, and an event row records it, all in the caller's transaction.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, insert, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, select

from scheduler.store.keys import among
from scheduler.store.tables import AllocationRow, CheckpointRow, JobEventRow, JobRow
from values.domain import JobSpec
from values.lifecycle import JobEvent, JobState, transition


class StaleWrite(Exception):
    """Another writer changed the row since it was read; the caller re-reads or skips."""


class NotFound(LookupError):
    pass


class RequestConflict(Exception):
    """The client request id was used before for a different spec."""


# Built once: Core inserts with bound parameters reuse one compiled statement.
INSERT_JOB = insert(JobRow.__table__)  # type: ignore[attr-defined]
INSERT_EVENT = insert(JobEventRow.__table__)  # type: ignore[attr-defined]


def new_job_id() -> str:
    return "j-" + secrets.token_hex(6)  # the shape of values.names.JOB_ID_PATTERN


def spec_of(job: JobRow) -> JobSpec:
    return JobSpec.model_validate_json(job.spec)


class SpecCache:
    """Parsed specs of the jobs the control loop works on, by job id.

    Specs never change and JobSpec is frozen, and every cycle reads every running job:
    parsing them all again would cost more than deciding. ``keep`` drops the jobs that
    left, so the cache holds the live jobs only (one keyed on every spec text ever seen
    grew with each submitted job: ~6 MiB over a soak's day, up to 200,000 specs).
    """

    def __init__(self) -> None:
        self._by_id: dict[str, JobSpec] = {}

    def get(self, job: JobRow) -> JobSpec:
        spec = self._by_id.get(job.id)
        if spec is None:
            spec = self._by_id[job.id] = spec_of(job)
        return spec

    def __len__(self) -> int:
        return len(self._by_id)

    def keep(self, ids: Iterable[str]) -> None:
        live = set(ids)
        for gone in [i for i in self._by_id if i not in live]:
            del self._by_id[gone]


def record(
    session: Session,
    job: JobRow,
    event: str,
    now: float,
    *,
    from_state: str | None = None,
    to_state: str | None = None,
    reason: str | None = None,
    message: str = "",
) -> None:
    row = event_values(
        job, event, now, from_state=from_state, to_state=to_state, reason=reason, message=message
    )
    session.connection().execute(INSERT_EVENT, row)


def event_values(
    job: JobRow,
    event: str,
    now: float,
    *,
    from_state: str | None = None,
    to_state: str | None = None,
    reason: str | None = None,
    message: str = "",
) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "at": now,
        "attempt": job.attempt,
        "event": event,
        "from_state": from_state,
        "to_state": to_state,
        "reason": reason,
        "message": message,
    }


def move(
    session: Session,
    job: JobRow,
    event: JobEvent,
    now: float,
    *,
    reason: str | None = None,
    message: str = "",
    **changes: Any,
) -> JobRow:
    """Apply ``event`` to ``job`` if legal and if nobody changed the row since it was read.
    The row's reason and message become the transition's: what users see is why the job
    is in its current state, never a reason left from an earlier one.

    Raises ``IllegalTransition`` (a bug in the caller) or ``StaleWrite`` (lost a race).
    """
    old = JobState(job.state)
    new = transition(old, event)
    values = {"reason": reason, "message": message, **changes, "state": new.value, "version": job.version + 1}
    if not _guarded_update(session, job, values):
        raise StaleWrite(f"job {job.id} changed under us (version {job.version})")
    record(
        session,
        job,
        event.value,
        now,
        from_state=old.value,
        to_state=new.value,
        reason=reason,
        message=message,
    )
    return job


def touch(session: Session, job: JobRow, **changes: Any) -> bool:
    """A guarded update that is not a state change (pending reason, estimate)."""
    return _guarded_update(session, job, {**changes, "version": job.version + 1})


def touch_many(session: Session, changes: Sequence[tuple[JobRow, dict[str, Any]]]) -> int:
    """``touch`` for many jobs, one executemany per column set: the first cycle after a
    burst of submissions notes a reason for each new job, and 10,000 single updates took
    ~1.3 s. Rows that moved since they were read are left alone, as ``touch`` leaves
    them. Only the loop writes these columns, so a row reading back our version and our
    values took our update, and only those rows take the values in memory. Returns
    how many did."""
    wanted = {job.id: (job, {**values, "version": job.version + 1}) for job, values in changes}
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for job, values in wanted.values():
        groups.setdefault(tuple(sorted(values)), []).append(_params(job, values))
    for keys, params_list in groups.items():
        session.connection().execute(_update_statement(keys), params_list)
    t = JobRow.__table__  # type: ignore[attr-defined]
    columns = sorted({k for _, values in wanted.values() for k in values})
    applied, ids = 0, list(wanted)
    for start in range(0, len(ids), 512):
        stmt = select(t.c.id, *(t.c[k] for k in columns)).where(among(t.c.id, ids[start : start + 512]))
        for row in session.connection().execute(stmt):
            job, values = wanted[row.id]
            if all(getattr(row, k) == v for k, v in values.items()):
                _take(job, values)
                applied += 1
    return applied


_UPDATES: dict[tuple[str, ...], Any] = {}


def _update_statement(keys: tuple[str, ...]) -> Any:
    """UPDATE ... WHERE id = :w_id AND version = :w_version, compiled once per column set."""
    stmt = _UPDATES.get(keys)
    if stmt is None:
        t = JobRow.__table__  # type: ignore[attr-defined]
        stmt = (
            update(t)
            .where(t.c.id == bindparam("w_id"), t.c.version == bindparam("w_version"))
            .values({k: bindparam(f"v_{k}") for k in keys})
        )
        _UPDATES[keys] = stmt
    return stmt


def _guarded_update(session: Session, job: JobRow, values: dict[str, Any]) -> bool:
    """A Core statement rather than the ORM's (whose version check re-evaluates every
    loaded row after each update)."""
    stmt = _update_statement(tuple(sorted(values)))
    if session.connection().execute(stmt, _params(job, values)).rowcount != 1:
        return False
    _take(job, values)
    return True


def _params(job: JobRow, values: dict[str, Any]) -> dict[str, Any]:
    """``_update_statement``'s parameters: the new values, guarded by the version read."""
    return {f"v_{k}": v for k, v in values.items()} | {"w_id": job.id, "w_version": job.version}


def _take(job: JobRow, values: dict[str, Any]) -> None:
    """The row in memory takes what was written, as committed (no reload)."""
    for key, value in values.items():
        set_committed_value(job, key, value)


@dataclass(frozen=True)
class Submitted:
    job: JobRow
    created: bool  # False: an earlier submission with the same client request id


def submit(
    session: Session,
    spec: JobSpec,
    *,
    priority: int,
    now: float,
    submitted_by: str | None,
    client_request_id: str | None,
) -> Submitted:
    """Insert a PENDING job, or return the one already made for this request id."""
    spec_json = spec.model_dump_json()
    if client_request_id:
        earlier = find_by_request(session, spec.org, client_request_id)
        if earlier is not None:
            return same_request(earlier, spec_json)
    job = new_pending(spec, spec_json, priority, now, submitted_by, client_request_id)
    values = job.model_dump()
    if not client_request_id:
        # Nothing to collide with: a plain Core insert (the ORM costs ~3x more per row).
        session.connection().execute(INSERT_JOB, values)
        record(session, job, "submitted", now, to_state=JobState.PENDING.value, message=f"by {submitted_by}")
        return Submitted(job, True)
    try:
        with session.begin_nested():
            session.connection().execute(INSERT_JOB, values)
    except IntegrityError:
        # A concurrent request with the same id won the insert; answer with its job.
        earlier = find_by_request(session, spec.org, client_request_id or "")
        if earlier is None:
            raise
        return same_request(earlier, spec_json)
    record(session, job, "submitted", now, to_state=JobState.PENDING.value, message=f"by {submitted_by}")
    return Submitted(job, True)


def new_pending(
    spec: JobSpec, spec_json: str, priority: int, now: float, submitted_by: str | None, request_id: str | None
) -> JobRow:
    return JobRow(
        id=new_job_id(),
        org=spec.org,
        team=spec.team,
        name=spec.name,
        spec=spec_json,
        state=JobState.PENDING.value,
        priority=priority,
        submitted_at=now,
        submitted_by=submitted_by,
        client_request_id=request_id or None,
    )


def same_request(earlier: JobRow, spec_json: str) -> Submitted:
    """The earlier job for a retried request id, or RequestConflict if the spec differs."""
    if json.loads(earlier.spec) != json.loads(spec_json):
        raise RequestConflict(
            f"client_request_id was already used for job {earlier.id} with a different spec"
        )
    return Submitted(earlier, False)


def find_by_request(session: Session, org: str, request_id: str) -> JobRow | None:
    stmt = select(JobRow).where(JobRow.org == org, JobRow.client_request_id == request_id)
    return session.exec(stmt).first()


def get(session: Session, job_id: str) -> JobRow:
    job = session.get(JobRow, job_id)
    if job is None:
        raise NotFound(f"job '{job_id}' not found")
    return job


def list_jobs(
    session: Session,
    *,
    orgs: Sequence[str] | None = None,
    states: Sequence[str] | None = None,
    team: str | None = None,
    name: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[JobRow]:
    """Newest first. ``orgs=None`` means every org (pool admins)."""
    stmt = select(JobRow)
    if orgs is not None:
        stmt = stmt.where(col(JobRow.org).in_(list(orgs)))
    if states:
        stmt = stmt.where(col(JobRow.state).in_(list(states)))
    if team:
        stmt = stmt.where(JobRow.team == team)
    if name:
        stmt = stmt.where(JobRow.name == name)
    stmt = stmt.order_by(col(JobRow.submitted_at).desc(), col(JobRow.id).desc()).offset(offset).limit(limit)
    return list(session.exec(stmt).all())


def pending(session: Session) -> list[JobRow]:
    stmt = select(JobRow).where(JobRow.state == JobState.PENDING.value)
    return list(session.exec(stmt.order_by(col(JobRow.submitted_at), col(JobRow.id))).all())


def events(session: Session, job_id: str, limit: int = 1000) -> list[JobEventRow]:
    stmt = select(JobEventRow).where(JobEventRow.job_id == job_id).order_by(col(JobEventRow.id)).limit(limit)
    return list(session.exec(stmt).all())


def allocation(session: Session, job_id: str, attempt: int) -> AllocationRow | None:
    stmt = select(AllocationRow).where(AllocationRow.job_id == job_id, AllocationRow.attempt == attempt)
    return session.exec(stmt).first()


def current_allocations(session: Session, jobs: Sequence[JobRow]) -> dict[str, AllocationRow]:
    """Each job's allocation for its current attempt, where it has one: one query for a page."""
    if not jobs:
        return {}
    attempt = {j.id: j.attempt for j in jobs}
    stmt = select(AllocationRow).where(col(AllocationRow.job_id).in_(list(attempt)))
    return {a.job_id: a for a in session.exec(stmt).all() if a.attempt == attempt[a.job_id]}


def checkpoint_order(*, newest_first: bool = False) -> tuple[Any, ...]:
    """The order of a job's checkpoints: by time, then step, then id; a checkpoint without
    a step comes before one with. Spelled out because SQLite and PostgreSQL sort NULL at
    opposite ends: the resume point and the list users see must be the same row on both."""
    keys = (col(CheckpointRow.at), func.coalesce(col(CheckpointRow.step), -1), col(CheckpointRow.id))
    return tuple(k.desc() for k in keys) if newest_first else keys


def live_allocations(session: Session) -> list[AllocationRow]:
    """Allocations still holding nodes: active, or stopping but not yet gone."""
    stmt = select(AllocationRow).where(col(AllocationRow.state).in_(["active", "stopping"]))
    return list(session.exec(stmt.order_by(col(AllocationRow.id))).all())


def counts_by_state(session: Session) -> dict[str, int]:
    stmt = select(JobRow.state, func.count()).group_by(JobRow.state)
    return {state: int(n) for state, n in session.exec(stmt).all()}


def request_stop(session: Session, job: JobRow, now: float) -> None:
    """Mark the job's live allocation as stopping; the leader's loop stops the gang."""
    alloc = allocation(session, job.id, job.attempt)
    if alloc is not None and alloc.state == "active":
        alloc.state = "stopping"
        alloc.stop_requested_at = now
        session.add(alloc)


def cancel(session: Session, job: JobRow, now: float, by: str | None) -> JobRow:
    """Cancel a job in any non-terminal state; its gang, if any, is stopped by the loop."""
    move(session, job, JobEvent.CANCEL, now, reason="cancelled", message=f"by {by}", finished_at=now)
    request_stop(session, job, now)
    return job
