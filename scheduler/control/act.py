"""Act: the backend is asked to do what ``persist`` committed, once per cycle, and the
launches it accepted are recorded. Only this module and ``observe`` call the backend."""

from __future__ import annotations

import logging

from sqlmodel import select

from scheduler.backends.base import Backend, BackendError, Launch
from scheduler.checkpoint_folder import DEFAULT_ROOT, job_folder, outside_problem
from scheduler.control.fence import Fence
from scheduler.control.outcome import Actions, Outcome
from scheduler.control.restarts import restart
from scheduler.store import jobs as jobstore
from scheduler.store.db import Database
from scheduler.store.keys import among
from scheduler.store.tables import AllocationRow, CheckpointRow, JobRow
from scheduler.store.view import assignments_of
from values.domain import JobSpec
from values.lifecycle import JobEvent, JobState
from values.restarts import FailureCategory

log = logging.getLogger(__name__)


def act(
    db: Database,
    backend: Backend,
    fence: Fence,
    acts: Actions,
    now: float,
    out: Outcome,
    specs: jobstore.SpecCache,
    checkpoint_root: str = DEFAULT_ROOT,
) -> None:
    """After the commits, once per cycle: forget, stop, launch; then record the launches
    (a launch the backend refused is the infrastructure's failure)."""
    for key in acts.forgets:
        backend.forget(key)
    for key, grace in acts.stops:
        backend.stop(key, grace, now)
    for launch in acts.validations:
        try:
            backend.launch(launch, now)
        except Exception as exc:  # the next cycle finds no gang: an inconclusive run
            log.warning("could not launch the validation of %s: %s", launch.job_id, exc)
    if not acts.launches:
        return
    done: list[tuple[AllocationRow, str | None]] = []
    resume = _resume_points(db, [job.id for _, job, _ in acts.launches], checkpoint_root)
    for alloc, job, spec in acts.launches:
        try:
            backend.launch(_launch_of(alloc, job, spec, resume.get(job.id), checkpoint_root), now)
            done.append((alloc, None))
        except BackendError as exc:
            done.append((alloc, str(exc)))
        except Exception as exc:  # a backend bug or I/O error is still the infrastructure's failure
            log.exception("backend failed to launch %s", alloc.job_id)
            done.append((alloc, f"{type(exc).__name__}: {exc}"))
    with db.write() as s:
        fence.check(s, now)
        for alloc, error in done:
            fresh = s.get(JobRow, alloc.job_id, with_for_update=True)
            live = s.get(AllocationRow, alloc.id)
            if (
                fresh is None
                or live is None
                or fresh.state != JobState.ADMITTED
                or fresh.attempt != alloc.attempt
            ):
                continue  # cancelled meanwhile: the next reconcile stops the gang
            if error is None:
                jobstore.move(s, fresh, JobEvent.LAUNCHED, now)
                out.launched.append(fresh.id)
            else:
                restart(
                    s, fresh, live, now, out, specs, category=FailureCategory.INFRASTRUCTURE, node=None,
                    message=f"launch failed: {error}",
                )  # fmt: skip


def _resume_points(db: Database, job_ids: list[str], checkpoint_root: str) -> dict[str, str]:
    """Each job's latest checkpoint path inside its own folder, in one query (a path
    stored before the folder rule held is not handed to the next attempt)."""
    if not job_ids:
        return {}
    with db.read() as s:
        stmt = (
            select(CheckpointRow)
            .where(among(CheckpointRow.job_id, job_ids))
            .order_by(*jobstore.checkpoint_order())
        )
        rows = s.exec(stmt).all()
    # Later rows overwrite earlier.
    return {c.job_id: c.path for c in rows if outside_problem(c.path, checkpoint_root, c.job_id) is None}


def _launch_of(
    alloc: AllocationRow, job: JobRow, spec: JobSpec, resume_from: str | None, checkpoint_root: str
) -> Launch:
    env = {
        "TRAINPOOL_JOB_ID": job.id,
        "TRAINPOOL_ATTEMPT": str(alloc.attempt),
        "TRAINPOOL_CHECKPOINT_DIR": job_folder(checkpoint_root, job.id),
    }
    if resume_from is not None:
        env["TRAINPOOL_RESUME_FROM"] = resume_from
    return Launch(
        job_id=job.id,
        attempt=alloc.attempt,
        spec=spec,
        flavor=alloc.flavor,
        assignments=assignments_of(alloc),
        env=env,
    )
