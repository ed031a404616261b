"""Progress in the persist phase: the loop keeps each running gang's progress from what
its backend reports (``values.progress.advance``) and acts on the two verdicts:

- a **hang** stops the gang with its grace (the SDK's SIGTERM hook saves a checkpoint if
  the code still can) and restarts it from its latest checkpoint, classed ``hang``: not
  charged, first in its org's queue, up to ``restart.on.hang`` times (3 by default);
- a **straggler** is recorded once per attempt (an event, a blame on its node that the
  quarantine rule counts like a crash's and the health model weighs against the node's own
  evidence, a metric), and its gang is moved off the node,
  classed ``straggler``, once the move pays for itself (``Straggler.move``).

Called inside ``persist_observation``'s transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session

from scheduler import failures
from scheduler.backends.base import GangStatus, gang_key
from scheduler.control.outcome import Actions, Outcome
from scheduler.control.restarts import restart
from scheduler.store import jobs as jobstore
from scheduler.store import orgs as orgstore
from scheduler.store import progress as progressstore
from scheduler.store.tables import AllocationRow, JobRow, ProgressRow
from values.lifecycle import JobState
from values.progress import GangProgress, ProgressRule, advance, hang, straggler
from values.restarts import FailureCategory

STRAGGLER_EVENT = failures.STRAGGLER


@dataclass
class Tracked:
    """The live gangs' progress rows, read once per cycle."""

    rows: dict[str, ProgressRow]

    @classmethod
    def load(cls, s: Session, allocs: list[AllocationRow]) -> Tracked:
        return cls(progressstore.rows(s, (a.job_id for a in allocs if a.state == "active")))


def track(
    s: Session, tracked: Tracked, a: AllocationRow, st: GangStatus, now: float, rule: ProgressRule
) -> GangProgress | None:
    """This attempt's progress after the backend's reports, written where it changed."""
    row = tracked.rows.get(a.job_id)
    before = progressstore.progress_of(row)
    after = advance(before, a.attempt, st.progress, now, rule)
    if after is not None and after != before:
        tracked.rows[a.job_id] = progressstore.save(s, row, a.job_id, after, now)
    return after if after is not None and after.attempt == a.attempt else None


def judge(
    s: Session,
    job: JobRow,
    a: AllocationRow,
    st: GangStatus,
    tracked: Tracked,
    now: float,
    rule: ProgressRule,
    out: Outcome,
    acts: Actions,
    specs: jobstore.SpecCache,
) -> str | None:
    """Act on a running gang's progress; the node a straggler verdict blames, if any."""
    progress = track(s, tracked, a, st, now, rule)
    if progress is None or job.state != JobState.RUNNING or a.state != "active":
        return None
    key, grace = gang_key(a.job_id, a.attempt), specs.get(job).grace_period_seconds
    if (h := hang(progress, now, rule)) is not None:
        restart(s, job, a, now, out, specs, category=FailureCategory.HANG, node=None, message=h.message,
                settled=False)  # fmt: skip
        acts.stops.append((key, grace))
        out.verdicts.append((job.org, FailureCategory.HANG.value))
        return None
    since = now - (failures.last_checkpoint_at(s, a) or a.created_at)
    slow = straggler(progress, now, rule, since)
    if slow is None:
        return None
    row = tracked.rows[a.job_id]
    blamed = None
    if row.straggler_noted != slow.rank:
        row.straggler_noted = slow.rank
        s.add(row)
        jobstore.record(s, job, STRAGGLER_EVENT, now, from_state=job.state, to_state=job.state,
                        reason=FailureCategory.STRAGGLER.value, message=slow.message)  # fmt: skip
        out.verdicts.append((job.org, FailureCategory.STRAGGLER.value))
        if slow.node is not None:
            orgstore.audit(s, now, "scheduler", failures.BLAMED, slow.node, job=job.id, attempt=a.attempt,
                           why=STRAGGLER_EVENT, message=slow.message)  # fmt: skip
            blamed = slow.node
    if slow.move:
        restart(s, job, a, now, out, specs, category=FailureCategory.STRAGGLER, node=slow.node,
                message=f"moved off a straggler: {slow.message}", settled=False)  # fmt: skip
        acts.stops.append((key, grace))
    return blamed
