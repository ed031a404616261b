"""Tiresias (Gu et al., NSDI'19), discretized two-dimensional least-attained-service.

A job's attained service is accelerators x seconds held so far (both dimensions of
2D-LAS). Jobs sit in priority queues by attained service (``THRESHOLDS``); the first
queue goes first, FIFO by submission within a queue; quotas are ignored (org-blind).
On top of the core's placement (priority order, no backfill), a job that did not fit
preempts running jobs of lower queues, most attained service first, when that makes it
fit: the core's ``least_attained`` action, with the queue passed as the priority and the
service as ``RunningJob.service``. Not modelled: Tiresias' starvation promotion and its
placement consolidation heuristics (the core's topology-aware placement is used instead).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from scheduler.sim.policies.base import NORMAL_PRIORITY
from values.snapshot import DEFAULT_ACTIONS, Ordering, Policy

if TYPE_CHECKING:
    from scheduler.sim.engine import SimJob, Simulation

# Queue boundaries in accelerator-seconds: < 1 GPU-hour, < 100 GPU-hours, the rest.
THRESHOLDS = (3_600.0, 360_000.0)


class Tiresias:
    name = "tiresias"
    dynamic_priority = True
    core = Policy(
        ordering=Ordering.PRIORITY,
        borrowing=True,
        reclaim=False,
        priority_preemption=False,
        backfill=False,
        actions=(*DEFAULT_ACTIONS, "least_attained"),
    )
    description = (
        "Tiresias-like discretized 2D-LAS: queues by attained GPU-time (<1 h, <100 h, rest), "
        "FIFO within a queue, org-blind, preempts lower queues for a blocked job"
    )

    def priority(self, job: SimJob, now: float) -> int:
        # Called for every running job every cycle: the queue is written out inline.
        attained = job.attained + (job.acc * (now - job.start) if job.running is not None else 0.0)
        return NORMAL_PRIORITY - (0 if attained < _FIRST else 1 if attained < _SECOND else 2)

    def next_wakeup(self, sim: Simulation, now: float) -> float | None:
        """When the next running job drops a queue, if anyone is waiting to benefit."""
        if not sim.pending:
            return None
        best = math.inf
        for job in sim.running.values():  # every cycle: written out rather than via attained()
            acc = job.acc
            if not acc:
                continue
            attained = job.attained + (acc * (now - job.start) if job.running is not None else 0.0)
            if attained < _FIRST:
                t = now + (_FIRST - attained) / acc
            elif attained < _SECOND:
                t = now + (_SECOND - attained) / acc
            else:
                continue  # in the last queue: it drops no further
            if t < best:
                best = t
        return None if best == math.inf else best


_FIRST, _SECOND = THRESHOLDS
