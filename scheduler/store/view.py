"""Reading the store into the decision core's ``Snapshot``.

``PoolView`` is the part of the pool file the store does not hold (flavors, priority
classes, policy). The snapshot is built in one read transaction, so decide() sees one
consistent moment; the versions it saw go along, and the applier refuses to act on a
job that changed since.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from sqlalchemy import func
from sqlmodel import Session, col, select

from scheduler.store import jobs as jobstore
from scheduler.store import nodes as nodestore
from scheduler.store import orgs as orgstore
from scheduler.store import usage as usagestore
from scheduler.store.keys import among
from scheduler.store.tables import AllocationRow, CheckpointRow, JobRow
from values.domain import DEFAULT_PRIORITY_CLASSES, Flavor, JobSpec, PriorityClass
from values.lifecycle import JobState
from values.snapshot import PendingJob, Policy, RunningJob, Snapshot


@dataclass(frozen=True)
class PoolView:
    flavors: tuple[Flavor, ...] = ()  # empty: every flavor seen on a node or in a quota
    priority_classes: tuple[PriorityClass, ...] = DEFAULT_PRIORITY_CLASSES
    policy: Policy = field(default_factory=Policy)

    def priority_value(self, name: str) -> int | None:
        return next((p.value for p in self.priority_classes if p.name == name), None)

    def min_runtime_of(self, spec: JobSpec) -> float:
        """The job's own min_runtime_seconds, else its priority class's (read each cycle,
        so a changed pool file applies to running jobs too)."""
        if spec.min_runtime_seconds is not None:
            return spec.min_runtime_seconds
        return next((p.min_runtime_seconds for p in self.priority_classes if p.name == spec.priority), 0.0)

    @classmethod
    def from_config(cls, config: object) -> PoolView:
        """From a ``scheduler.config.PoolConfig`` (duck-typed to keep the store import-light)."""
        return cls(
            flavors=tuple(config.flavors),  # type: ignore[attr-defined]
            priority_classes=tuple(config.priority_classes),  # type: ignore[attr-defined]
            policy=config.policy.to_policy(),  # type: ignore[attr-defined]
        )


@dataclass
class View:
    snapshot: Snapshot
    jobs: dict[str, JobRow] = field(default_factory=dict)  # as read: version, attempt
    allocations: dict[str, AllocationRow] = field(default_factory=dict)  # live, by job id


def flavors_of(session: Session, pool: PoolView) -> tuple[Flavor, ...]:
    if pool.flavors:
        return pool.flavors
    names = {n.flavor for n in nodestore.list_nodes(session)} | {q.flavor for q in orgstore.quotas(session)}
    return tuple(Flavor(name=n) for n in sorted(names))


class LiveCache:
    """What the loop keeps between cycles: pending jobs as of their last version, running
    jobs as the values last built, and the live (pending and running) jobs' parsed specs,
    which every phase of the cycle shares: a spec is parsed once while its job is live.

    A queue of thousands changes by a few jobs a cycle; re-reading and re-building
    every one of them would cost more than deciding. Each cycle reads only (id,
    version) of the queue and loads the rows whose version moved. A running job whose
    row, allocation and last checkpoint are as before is the same ``RunningJob`` object
    as in the last snapshot: the core's carried state (``core/carried.py``) sees an
    unchanged job by identity, so only what started, ended or changed costs it work.
    """

    _CHUNK = 512  # a power of two: see keys.padded

    def __init__(self) -> None:
        self._entries: dict[str, tuple[JobRow, PendingJob]] = {}
        self._running: dict[str, tuple[tuple[object, ...], RunningJob]] = {}
        self.specs = jobstore.SpecCache()

    def load(self, session: Session) -> tuple[list[JobRow], list[PendingJob]]:
        stmt = (
            select(JobRow.id, JobRow.version)
            .where(JobRow.state == JobState.PENDING.value)
            .order_by(col(JobRow.submitted_at), col(JobRow.id))
        )
        keys = list(session.exec(stmt).all())
        stale = [i for i, v in keys if (e := self._entries.get(i)) is None or e[0].version != v]
        for start in range(0, len(stale), self._CHUNK):
            chunk = stale[start : start + self._CHUNK]
            for row in session.exec(select(JobRow).where(among(JobRow.id, chunk))).all():
                self._entries[row.id] = (row, _pending(row, self.specs.get(row)))
        queued = {i for i, _ in keys}
        for gone in [i for i in self._entries if i not in queued]:
            del self._entries[gone]
        # A row re-read above may have left the queue in between (PostgreSQL reads each
        # statement afresh): only what is still PENDING goes to decide().
        entries = [self._entries[i] for i, _ in keys if i in self._entries]
        entries = [e for e in entries if e[0].state == JobState.PENDING.value]
        return [row for row, _ in entries], [job for _, job in entries]

    def running(
        self,
        rows: Mapping[str, JobRow],
        allocs: list[AllocationRow],
        checkpoints: Mapping[str, float],
        pool: PoolView,
    ) -> list[RunningJob]:
        """The running jobs of these allocations, reusing last cycle's value of each job
        whose inputs are unchanged; the rest are forgotten."""
        kept: dict[str, tuple[tuple[object, ...], RunningJob]] = {}
        out: list[RunningJob] = []
        for a in allocs:
            job = rows.get(a.job_id)
            if job is None:
                continue
            spec, checkpoint = self.specs.get(job), checkpoints.get(a.job_id)
            min_runtime = pool.min_runtime_of(spec)
            key = (job.version, job.priority, a.id, a.state, a.preempted_for, a.assignments,
                   a.created_at, a.flavor, checkpoint, min_runtime)  # fmt: skip
            hit = self._running.get(job.id)
            if hit is not None and hit[0] == key and hit[1].spec is spec:
                value = hit[1]
            else:
                value = _running(job, spec, a, checkpoint, min_runtime)
            kept[job.id] = (key, value)
            out.append(value)
        self._running = kept
        return out


def pool_shape(session: Session, pool: PoolView) -> Snapshot:
    """The pool without its jobs: flavors, nodes, orgs with their quotas, policy."""
    return Snapshot(
        flavors=flavors_of(session, pool),
        nodes=tuple(nodestore.to_node(r) for r in nodestore.list_nodes(session)),
        orgs=orgstore.domain_orgs(session),
        policy=pool.policy,
    )


def build(session: Session, pool: PoolView, now: float, cache: LiveCache | None = None) -> View:
    allocs = jobstore.live_allocations(session)
    alloc_by_job = {a.job_id: a for a in allocs}
    running_rows = _jobs(session, list(alloc_by_job))
    cache = cache or LiveCache()
    pending_rows, pending_jobs = cache.load(session)
    checkpoints = _last_checkpoints(session, list(alloc_by_job))
    cache.specs.keep([*running_rows, *(row.id for row in pending_rows)])
    running = cache.running(running_rows, allocs, checkpoints, pool)
    snapshot = replace(
        pool_shape(session, pool),
        running=tuple(running),
        pending=tuple(pending_jobs),
        usage=usagestore.decayed(session, now, pool.policy.half_life_seconds),
    )
    jobs = {**running_rows, **{j.id: j for j in pending_rows}}
    return View(snapshot=snapshot, jobs=jobs, allocations=alloc_by_job)


def _jobs(session: Session, ids: list[str]) -> dict[str, JobRow]:
    if not ids:
        return {}
    return {j.id: j for j in session.exec(select(JobRow).where(among(JobRow.id, ids))).all()}


def _last_checkpoints(session: Session, job_ids: list[str]) -> Mapping[str, float]:
    if not job_ids:
        return {}
    stmt = (
        select(CheckpointRow.job_id, func.max(CheckpointRow.at))
        .where(among(CheckpointRow.job_id, job_ids))
        .group_by(col(CheckpointRow.job_id))
    )
    return {job_id: float(at) for job_id, at in session.exec(stmt).all()}


def assignments_of(alloc: AllocationRow) -> tuple[tuple[str, int], ...]:
    return tuple((str(n), int(k)) for n, k in json.loads(alloc.assignments))


def _running(
    job: JobRow, spec: JobSpec, alloc: AllocationRow, checkpoint: float | None, min_runtime: float
) -> RunningJob:
    return RunningJob(
        id=job.id,
        spec=spec,
        priority=job.priority,
        submitted_at=job.submitted_at,
        started_at=alloc.created_at,  # this attempt's: its limit and lost work count from here
        flavor=alloc.flavor,
        assignments=assignments_of(alloc),
        last_checkpoint_at=checkpoint,
        terminating=alloc.state == "stopping",
        preempted_for=alloc.preempted_for,
        min_runtime=min_runtime,
    )


def _pending(job: JobRow, spec: JobSpec) -> PendingJob:
    return PendingJob(
        id=job.id,
        spec=spec,
        priority=job.priority,
        submitted_at=job.submitted_at,
        attempt=job.attempt,
        eligible_at=job.eligible_at,
        avoid_nodes=frozenset(json.loads(job.avoid_nodes)),
        preempted_by=job.preempted_by,
        nominated=job.nominated,
        expedite=job.expedite,
        prefer_nodes=tuple(json.loads(job.prefer_nodes)),
        resize_to=job.resize_to,
    )
