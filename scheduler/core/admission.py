"""Can this job ever run in this pool? Asked before a job is queued (at submit, and by
``trainpool validate --pool``) with the decision core's own rule, so that what is refused
up front is exactly what a cycle would reject: the job alone in the pool, every node
empty and healthy, against its org's quota."""

from __future__ import annotations

from dataclasses import replace

from scheduler.core.decide import decide
from values.decisions import Rejection
from values.domain import Health, JobSpec
from values.snapshot import PendingJob, Snapshot


def never_runs(pool: Snapshot, spec: JobSpec, priority: int) -> Rejection | None:
    """The rejection a cycle would give ``spec`` on ``pool``'s nodes and orgs, or None.
    Nodes down or cordoned now count as healthy: they may come back."""
    nodes = tuple(n.model_copy(update={"health": Health.HEALTHY, "cordoned": False}) for n in pool.nodes)
    alone = replace(pool, nodes=nodes, running=(), pending=(PendingJob("candidate", spec, priority, 0.0),))
    rejected = decide(alone, 0.0).rejections
    return rejected[0] if rejected else None
