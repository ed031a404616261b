"""Restarts: what the control loop does when an attempt ends early. Every early end has a
failure category; the job's restart policy (``RestartPolicy.verdict``, the one rule, which
the simulator applies too) says whether it goes back to the queue, and a job whose failure
was not its own goes back expedited, offered the nodes it still had.

Called inside the persist and act phases' transactions.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from sqlmodel import Session

from scheduler import failures
from scheduler.control.outcome import Outcome
from scheduler.store import jobs as jobstore
from scheduler.store.nodes import effective_health
from scheduler.store.tables import AllocationRow, JobRow, NodeRow
from scheduler.store.view import assignments_of
from values.domain import Health, JobSpec
from values.lifecycle import JobEvent, JobState, RequeueReason
from values.restarts import FailureCategory, Verdict, returning

# The pool stops these gangs itself, with their grace to checkpoint: what they lose is
# known once they are gone.
STOPPED_WITH_GRACE = frozenset({FailureCategory.TIMEOUT, FailureCategory.HANG, FailureCategory.STRAGGLER})


def release(s: Session, a: AllocationRow, at: float) -> None:
    a.state = "released"
    a.released_at = at
    s.add(a)


def restart(
    s: Session,
    job: JobRow,
    a: AllocationRow,
    now: float,
    out: Outcome,
    specs: jobstore.SpecCache,
    *,
    category: FailureCategory,
    node: str | None,
    message: str,
    exit_code: int | None = None,
    settled: bool = True,
) -> None:
    """A gang ended by a failure of ``category``: back to the queue, or FAILED where the
    job's restart policy allows no more. With ``settled`` False its replicas are still
    going: the job stays RESTARTING and its allocation stopping (capacity held) until
    persist sees them gone and requeues it."""
    spec = specs.get(job)
    cls = category.failure_class
    if category not in STOPPED_WITH_GRACE:  # those count theirs once gone (persist._stopping)
        out.lost.append((job.org, cls, failures.lost_work(s, a, now)))
    if settled:
        release(s, a, now)
    elif a.state == "active":
        a.state, a.stop_requested_at = "stopping", now
        s.add(a)
    verdict = _verdict(s, job, spec, category)
    text = f"{message or 'failed'}; {verdict.why}"
    if not verdict.restart:
        jobstore.move(
            s, job, JobEvent.FAILED, now, reason=category.value, message=text, failure_class=cls,
            exit_code=exit_code, finished_at=now,
        )  # fmt: skip
        out.finished.append((job.id, JobState.FAILED.value))
        return
    back = returning(category, nodes_of(a), node, usable(s))
    jobstore.move(
        s, job, JobEvent.RESTART, now, reason=category.value, message=text, failure_class=cls,
        exit_code=exit_code, restarts=job.restarts + (0 if category.infrastructure else 1),
        eligible_at=now + verdict.backoff, avoid_nodes=json.dumps(sorted(back.avoid)),
        expedite=back.expedite, prefer_nodes=json.dumps(back.prefer),
    )  # fmt: skip
    out.restarted.append((job.id, cls))
    if settled:
        requeue(s, job, now)


def _verdict(s: Session, job: JobRow, spec: JobSpec, category: FailureCategory) -> Verdict:
    """The job's restart policy on this failure, given its earlier restarts (stored)."""
    return spec.restart.verdict(category, failures.restart_counts(s, job), job.restarts)


def nodes_of(a: AllocationRow) -> list[str]:
    return [name for name, _ in assignments_of(a)]


def usable(s: Session) -> Callable[[str], bool]:
    """Whether a node may be offered to a returning gang: present, not cordoned, not
    unhealthy."""

    def ok(name: str) -> bool:
        row = s.get(NodeRow, name)
        return (
            row is not None
            and row.present
            and not row.cordoned
            and effective_health(row) is not Health.UNHEALTHY
        )

    return ok


def requeue(s: Session, job: JobRow, now: float, **changes: object) -> None:
    """Back to the queue with the next attempt number; the event says why, and an
    expedited job's says which nodes it is offered first."""
    if job.state == JobState.PREEMPTED and job.resize_to is not None:
        reason = RequeueReason.RESIZED
        nodes = json.loads(job.prefer_nodes)
        message = (
            f"an elastic gang resized: restarts from its checkpoint at {job.resize_to} replicas, first in "
            f"the queue, on its nodes {', '.join(nodes)} first"
        )
    elif job.expedite or changes.get("expedite"):
        reason = RequeueReason.EXPEDITED
        nodes = json.loads(str(changes.get("prefer_nodes", job.prefer_nodes)))
        where = f"; its nodes {', '.join(nodes)} are offered first" if nodes else ""
        message = f"requeued at the head of its org's queue after an infrastructure failure{where}"
    else:
        reason = RequeueReason.PREEMPTED if job.state == JobState.PREEMPTED else RequeueReason.RESTART
        message = ""
    jobstore.move(
        s,
        job,
        JobEvent.REQUEUE,
        now,
        attempt=job.attempt + 1,
        reason=reason.value,
        message=message,
        **changes,
    )


def moved_off(
    s: Session, job: JobRow, a: AllocationRow, now: float, out: Outcome, specs: jobstore.SpecCache
) -> None:
    """A job moved off an unhealthy node, its gang gone: back to the queue expedited, on
    what is left of its nodes, unless its restart policy allows no more such moves
    (``restart.on.health``): then it fails."""
    verdict = _verdict(s, job, specs.get(job), FailureCategory.HEALTH)
    if verdict.restart:
        back = returning(FailureCategory.HEALTH, nodes_of(a), None, usable(s))
        requeue(s, job, now, expedite=back.expedite, prefer_nodes=json.dumps(back.prefer))
        return
    jobstore.move(
        s, job, JobEvent.FAILED, now, reason=FailureCategory.HEALTH.value,
        message=f"moved off an unhealthy node; {verdict.why}", failure_class="infrastructure",
        finished_at=now,
    )  # fmt: skip
    out.finished.append((job.id, JobState.FAILED.value))
