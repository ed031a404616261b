"""/v1/jobs and /v1/queue: thin handlers over scheduler.store.jobs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Response
from sqlmodel import Session, select
from starlette.concurrency import run_in_threadpool

from scheduler.api.auth import authenticate, can_see_org, require_org, visible_orgs
from scheduler.api.context import ServerContext, get_ctx
from scheduler.api.errors import ApiError, not_found
from scheduler.api.redact import Redactor
from scheduler.api.schemas import CheckpointRequest, Event, Job, SubmitRequest
from scheduler.backends.base import gang_key
from scheduler.checkpoint_folder import outside_problem
from scheduler.control.handle import LoopUnavailable
from scheduler.store import goodput as goodputstore
from scheduler.store import jobs as jobstore
from scheduler.store import orgs as orgstore
from scheduler.store import progress as progressstore
from scheduler.store.tables import CheckpointRow, JobEventRow, JobRow
from scheduler.store.tokens import Principal
from scheduler.store.view import flavors_of
from values.domain import JobSpec
from values.lifecycle import TERMINAL, IllegalTransition, JobEvent, JobState, RequeueReason
from values.progress import GangProgress, RankTrack

router = APIRouter(prefix="/v1", tags=["jobs"])
Ctx = Annotated[ServerContext, Depends(get_ctx)]
Who = Annotated[Principal, Depends(authenticate)]


def _visible_job(s: Session, who: Principal, job_id: str) -> JobRow:
    job = s.get(JobRow, job_id)
    if job is None:
        raise not_found("job", job_id)
    if not can_see_org(who, job.org):  # the same answer as for no job, so ids do not leak; audited
        raise ApiError(404, f"job '{job_id}' not found", denied=True)
    return job


def _check_owner(ctx: ServerContext, spec: JobSpec) -> None:
    """The org and team exist (a database read, remembered once it succeeds)."""
    with ctx.db.read() as s:
        if orgstore.get_org(s, spec.org) is None:
            raise ApiError(422, f"unknown org '{spec.org}'", "spec.org")
        if spec.team is not None and spec.team not in {t.name for t in orgstore.teams(s, spec.org)}:
            raise ApiError(422, f"org '{spec.org}' has no team '{spec.team}'", "spec.team")
        flavors = {f.name for f in flavors_of(s, ctx.pool)}
    _check_flavors(spec, flavors)
    ctx.known_owners.add((spec.org, spec.team))


def _check_flavors(spec: JobSpec, known: set[str]) -> None:
    for i, flavor in enumerate(spec.gang.flavors):
        if flavor not in known:
            listing = ", ".join(sorted(known)) or "none"
            raise ApiError(
                422, f"unknown flavor '{flavor}' (this pool has: {listing})", f"spec.gang.flavors[{i}]"
            )


def _priority(ctx: ServerContext, spec: JobSpec) -> int:
    value = ctx.pool.priority_value(spec.priority)
    if value is None:
        listing = ", ".join(p.name for p in ctx.pool.priority_classes)
        raise ApiError(
            422, f"unknown priority class '{spec.priority}' (this pool has: {listing})", "spec.priority"
        )
    return value


@router.post("/jobs", status_code=201, response_model=Job)
async def submit(
    req: SubmitRequest,
    ctx: Ctx,
    who: Who,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
) -> Job:
    """Async end to end: the hot path of the pool (checks cached, one group commit)."""
    require_org(who, req.spec.org)
    spec = req.spec
    if (spec.org, spec.team) in ctx.known_owners and ctx.pool.flavors:
        _check_flavors(spec, {f.name for f in ctx.pool.flavors})
    else:
        await run_in_threadpool(_check_owner, ctx, spec)
    priority = _priority(ctx, spec)
    answered, rejected = ctx.admission.known(spec, priority)
    if not answered:
        rejected = await run_in_threadpool(ctx.admission.problem, ctx.db, ctx.pool, spec, priority)
    if rejected is not None:
        raise ApiError(422, f"can never run here: {rejected.message} ({rejected.reason.value})", "spec.gang")
    try:
        sub = await ctx.submits.submit_async(
            spec,
            priority=priority,
            now=ctx.clock(),
            submitted_by=who.token_id,
            client_request_id=req.client_request_id or idempotency_key,
        )
    except jobstore.RequestConflict as exc:
        raise ApiError(409, str(exc), "client_request_id") from None
    if sub.created:
        ctx.metrics.submissions.labels(spec.org).inc()
        ctx.wake_loop()
    else:
        response.status_code = 200
    return Job.of(sub.job)


@router.get("/jobs", response_model=list[Job])
def list_jobs(
    ctx: Ctx,
    who: Who,
    org: Annotated[str | None, Query(max_length=63)] = None,
    state: Annotated[list[JobState] | None, Query()] = None,
    team: Annotated[str | None, Query(max_length=63)] = None,
    name: Annotated[str | None, Query(max_length=63)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[Job]:
    orgs = visible_orgs(who)
    if org is not None:
        if not can_see_org(who, org):
            raise ApiError(403, f"your token belongs to org '{who.org}', not '{org}'", "org")
        orgs = [org]
    with ctx.db.read() as s:
        rows = jobstore.list_jobs(
            s, orgs=orgs, states=state, team=team, name=name, limit=limit, offset=offset
        )
        allocs = jobstore.current_allocations(s, rows)
        hide = Redactor(s, who, (r.message for r in rows))
        return [Job.of(r, allocs.get(r.id), redact=hide) for r in rows]


@router.get("/jobs/{job_id}", response_model=Job)
def get_job(job_id: str, ctx: Ctx, who: Who) -> Job:
    with ctx.db.read() as s:
        job = _visible_job(s, who, job_id)
        events = jobstore.events(s, job.id)
        hide = Redactor(s, who, [job.message, *(e.message for e in events)])
        out = Job.of(job, jobstore.allocation(s, job.id, job.attempt), detail=True, redact=hide)
        out.resizes = resizes(events, hide)
        out.progress = progress_view(progressstore.get(s, job.id), job.attempt, ctx.clock())
        out.goodput = goodputstore.of_job(s, job.id, ctx.clock()).as_dict()
        return out


def progress_view(p: GangProgress | None, attempt: int, now: float) -> dict[str, Any] | None:
    """What describe shows of an attempt's progress: its step, rate, how long since its
    stalest rank advanced, and each rank (a straggler marked with how long it has been)."""
    if p is None or p.attempt != attempt:
        return None
    return {
        "step": p.step,
        "steps_per_second": p.steps_per_second(),
        "median_step_seconds": p.median_step_seconds,
        "seconds_since_progress": round(max(0.0, now - p.last_advance), 1),
        "ranks": [_rank_view(r, now) for r in p.ranks],
    }


def _rank_view(r: RankTrack, now: float) -> dict[str, Any]:
    slow = None if r.slow_since is None else round(max(0.0, now - r.slow_since), 1)
    return {"rank": r.rank, "node": r.node, "step": r.step, "step_seconds": r.step_seconds,
            "slow_for_seconds": slow}  # fmt: skip


@router.post("/jobs/{job_id}/cancel", response_model=Job)
def cancel_job(job_id: str, ctx: Ctx, who: Who) -> Job:
    for _ in range(5):  # the loop may bump the row between our read and write
        try:
            with ctx.db.write() as s:
                job = _visible_job(s, who, job_id)
                if JobState(job.state) in TERMINAL:
                    raise ApiError(409, f"job '{job_id}' already finished ({job.state}); nothing to cancel")
                jobstore.cancel(s, job, ctx.clock(), by=who.token_id)
                out = Job.of(job, jobstore.allocation(s, job.id, job.attempt))
            ctx.wake_loop()  # committed: the loop stops the gang
            return out
        except jobstore.StaleWrite:
            continue
        except IllegalTransition as exc:
            raise ApiError(409, str(exc)) from None
    raise ApiError(409, f"job '{job_id}' is changing too fast; try again")


@router.get("/jobs/{job_id}/events", response_model=list[Event])
def job_events(
    job_id: str, ctx: Ctx, who: Who, limit: Annotated[int, Query(ge=1, le=10_000)] = 1000
) -> list[Event]:
    with ctx.db.read() as s:
        _visible_job(s, who, job_id)
        rows = jobstore.events(s, job_id, limit)
        hide = Redactor(s, who, (e.message for e in rows))
        return [Event.of(e, hide) for e in rows]


@router.get("/jobs/{job_id}/logs")
def job_logs(
    job_id: str,
    ctx: Ctx,
    who: Who,
    attempt: Annotated[int | None, Query(ge=0, le=100_000)] = None,
    tail: Annotated[int, Query(ge=1, le=10_000)] = 200,
    replica: Annotated[int | None, Query(ge=0, le=100_000)] = None,
) -> dict[str, Any]:
    """The backend's log lines for one attempt (default: the latest one that has logs: a
    restarted job's new attempt has none until it launches), of one replica (by rank) or
    of all, each line prefixed with its rank."""
    with ctx.db.read() as s:
        job = _visible_job(s, who, job_id)
    tried = [attempt] if attempt is not None else range(job.attempt, max(-1, job.attempt - _LOOK_BACK), -1)
    loop = ctx.loop
    for which in tried:
        if loop is None:
            break
        try:
            lines = loop.logs(gang_key(job.id, which), tail, ctx.clock(), replica)
        except LoopUnavailable as exc:
            raise ApiError(503, f"logs come from the control loop's backend: {exc}") from None
        if lines is not None:
            return {"job_id": job.id, "attempt": which, "current_attempt": job.attempt, "state": job.state,
                    "lines": lines}  # fmt: skip
    which = job.attempt if attempt is None else attempt
    raise ApiError(404, f"no logs for attempt {which} of job '{job_id}' (the backend keeps none)", "attempt")


_LOOK_BACK = 20  # attempts searched for logs, newest first: bounded work per request


@router.post("/jobs/{job_id}/checkpoints", status_code=201)
def report_checkpoint(job_id: str, req: CheckpointRequest, ctx: Ctx, who: Who) -> dict[str, Any]:
    with ctx.db.write() as s:
        job = _visible_job(s, who, job_id)
        if (problem := outside_problem(req.path, ctx.checkpoint_root, job.id)) is not None:
            raise ApiError(422, problem, "path")
        row = CheckpointRow(job_id=job.id, attempt=job.attempt, path=req.path, step=req.step, at=ctx.clock())
        s.add(row)
        return {"job_id": job.id, "attempt": job.attempt, "path": req.path, "step": req.step, "at": row.at}


@router.get("/jobs/{job_id}/checkpoints")
def list_checkpoints(job_id: str, ctx: Ctx, who: Who) -> list[dict[str, Any]]:
    with ctx.db.read() as s:
        _visible_job(s, who, job_id)
        stmt = (
            select(CheckpointRow)
            .where(CheckpointRow.job_id == job_id)
            .order_by(*jobstore.checkpoint_order(newest_first=True))  # the top one is the resume point
        )
        return [r.model_dump(exclude={"id"}) for r in s.exec(stmt.limit(100)).all()]


@router.get("/queue")
def queue(
    ctx: Ctx,
    who: Who,
    org: Annotated[str | None, Query(max_length=63)] = None,
    flavor: Annotated[str | None, Query(max_length=63)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[dict[str, Any]]:
    """Pending jobs with why they wait and, where known, when they should start."""
    orgs = visible_orgs(who)
    if org is not None:
        if not can_see_org(who, org):
            raise ApiError(403, f"your token belongs to org '{who.org}', not '{org}'", "org")
        orgs = [org]
    with ctx.db.read() as s:
        rows = jobstore.list_jobs(s, orgs=orgs, states=[JobState.PENDING.value], limit=limit)
        hide = Redactor(s, who, (r.message for r in rows))
    out = []
    for r in sorted(rows, key=lambda r: (-r.priority, r.submitted_at, r.id)):
        spec = jobstore.spec_of(r)
        if flavor and flavor not in spec.gang.flavors:
            continue
        out.append(
            {
                "id": r.id, "name": r.name, "org": r.org, "team": r.team, "priority": spec.priority,
                "submitted_at": r.submitted_at, "attempt": r.attempt, "flavors": list(spec.gang.flavors),
                "accelerators": spec.gang.total_accelerators,
                "min_accelerators": spec.gang.least_accelerators, "reason": r.reason,
                "message": hide.text(r.message), "estimated_start": r.estimated_start,
            }
        )  # fmt: skip
    return out


def resizes(events: list[JobEventRow], hide: Redactor) -> list[dict[str, Any]]:
    """An elastic gang's resizes: each stop that the requeue after it calls a resize."""
    out: list[dict[str, Any]] = []
    stop: JobEventRow | None = None
    for e in events:
        if e.event == JobEvent.PREEMPT.value:
            stop = e
        elif (
            e.event == JobEvent.REQUEUE.value and e.reason == RequeueReason.RESIZED.value and stop is not None
        ):
            out.append(
                {
                    "at": stop.at,
                    "attempt": stop.attempt,
                    "reason": stop.reason,
                    "message": hide.text(stop.message),
                }
            )
            stop = None
    return out
