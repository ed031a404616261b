"""Job states and the transition table: the only way a job's state changes.

Every edge below carries a comment saying when it is taken. The control loop and the
API call :func:`transition`; an edge missing from the table is a bug in the caller, so it
raises :class:`IllegalTransition` instead of being applied.

Node occupancy is not a job state: a job that was asked to stop (PREEMPTED, CANCELLED)
or whose gang failed (RESTARTING, or FAILED with its restarts spent) keeps its allocation
until the backend reports every replica of the gang gone, and the allocation row, not
the job row, says which nodes are still held. RESTARTING is therefore observable for as
long as the failed gang's surviving replicas take to exit (seconds on Ray, a pod's
termination on Kubernetes); once they are gone the job is PENDING with reason
``backoff`` until its backoff ends.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    PENDING = "PENDING"  # waiting in the queue; the pending reason says why
    ADMITTED = "ADMITTED"  # placed by decide(); allocation stored, launch not yet confirmed
    STARTING = "STARTING"  # the backend accepted the gang; replicas are coming up
    RUNNING = "RUNNING"  # every replica runs
    PREEMPTED = "PREEMPTED"  # asked to stop for reclaim/priority/health; goes back to the queue
    RESTARTING = "RESTARTING"  # failed with restarts left; its replicas still exiting
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"  # decide() found it can never run (unknown flavor, never fits, ...)


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.REJECTED})
# States whose job holds (or may hold) nodes through a live allocation.
ACTIVE = frozenset({JobState.ADMITTED, JobState.STARTING, JobState.RUNNING})


class JobEvent(StrEnum):
    ADMIT = "admit"
    LAUNCHED = "launched"
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RESTART = "restart"
    PREEMPT = "preempt"
    REQUEUE = "requeue"
    CANCEL = "cancel"
    REJECT = "reject"


class RequeueReason(StrEnum):
    """Why a job went back to the queue: the requeue event's reason."""

    PREEMPTED = "preempted"  # stopped for another job: back in its place by priority and age
    RESTART = "restart"  # its own failure: eligible again after its backoff
    # Not its own fault (a lost node, a health move): at the head of its org's queue, its
    # surviving nodes offered first.
    EXPEDITED = "expedited"
    # An elastic gang stopped to grow or shrink: first in the whole queue (nominated),
    # offered the ranks it keeps, at the largest size that fits then.
    RESIZED = "resized"


_S = JobState
_E = JobEvent

TRANSITIONS: dict[tuple[JobState, JobEvent], JobState] = {
    # decide() placed the whole gang; the allocation is written in the same transaction.
    (_S.PENDING, _E.ADMIT): _S.ADMITTED,
    # decide() rejected it: unknown org/flavor, larger than the pool or than any quota.
    (_S.PENDING, _E.REJECT): _S.REJECTED,
    # Withdrawn before it ever ran: nothing to stop.
    (_S.PENDING, _E.CANCEL): _S.CANCELLED,
    # The backend accepted the launch (or reconcile found it already running).
    (_S.ADMITTED, _E.LAUNCHED): _S.STARTING,
    # The launch itself failed (backend error): infrastructure, so back to the queue
    # without charging the restart budget.
    (_S.ADMITTED, _E.RESTART): _S.RESTARTING,
    # Cancelled between placement and launch: the allocation is released.
    (_S.ADMITTED, _E.CANCEL): _S.CANCELLED,
    # Every replica reported running.
    (_S.STARTING, _E.STARTED): _S.RUNNING,
    # A replica failed while coming up, with restarts left (or an infrastructure failure).
    (_S.STARTING, _E.RESTART): _S.RESTARTING,
    # A replica failed while coming up and the restart budget is spent.
    (_S.STARTING, _E.FAILED): _S.FAILED,
    # A short job can finish before the loop saw it running.
    (_S.STARTING, _E.SUCCEEDED): _S.SUCCEEDED,
    # Preempted (reclaim, priority, health) before it was seen running.
    (_S.STARTING, _E.PREEMPT): _S.PREEMPTED,
    (_S.STARTING, _E.CANCEL): _S.CANCELLED,
    # All replicas exited 0.
    (_S.RUNNING, _E.SUCCEEDED): _S.SUCCEEDED,
    # Its own failure with the restart budget spent, or it ran past max_runtime_seconds.
    (_S.RUNNING, _E.FAILED): _S.FAILED,
    # Its own failure with restarts left (charged, with backoff), or an infrastructure
    # failure such as a lost node (free): the gang is stopped, then requeued.
    (_S.RUNNING, _E.RESTART): _S.RESTARTING,
    # decide() chose it as a victim; it gets its grace period to checkpoint.
    (_S.RUNNING, _E.PREEMPT): _S.PREEMPTED,
    # The user cancelled it; the gang is stopped with its grace period.
    (_S.RUNNING, _E.CANCEL): _S.CANCELLED,
    # The backend reports the preempted gang gone: back to the queue, same priority and
    # submit time, resuming from its latest checkpoint.
    (_S.PREEMPTED, _E.REQUEUE): _S.PENDING,
    # It finished on its own during the grace period of its preemption: done, not requeued.
    (_S.PREEMPTED, _E.SUCCEEDED): _S.SUCCEEDED,
    # Moved off an unhealthy node, and its restart policy allows no more such moves
    # (restart.on.health): it stays down once its gang is gone.
    (_S.PREEMPTED, _E.FAILED): _S.FAILED,
    # Cancelled while it was being stopped for preemption: it stays down.
    (_S.PREEMPTED, _E.CANCEL): _S.CANCELLED,
    # The failed gang is fully stopped: back to the queue with the next attempt number
    # (eligible after the backoff for charged failures).
    (_S.RESTARTING, _E.REQUEUE): _S.PENDING,
    (_S.RESTARTING, _E.CANCEL): _S.CANCELLED,
}


class IllegalTransition(Exception):
    """A caller tried a move the table does not allow; the state is left unchanged."""

    def __init__(self, state: JobState, event: JobEvent) -> None:
        self.state = state
        self.event = event
        allowed = ", ".join(sorted(e.value for (s, e) in TRANSITIONS if s == state)) or "none"
        super().__init__(f"cannot '{event.value}' a job in state {state.value} (allowed: {allowed})")


def transition(state: JobState, event: JobEvent) -> JobState:
    """The state after ``event``; raises :class:`IllegalTransition` for a move not in the table."""
    try:
        return TRANSITIONS[(JobState(state), JobEvent(event))]
    except KeyError:
        raise IllegalTransition(JobState(state), JobEvent(event)) from None


def can(state: JobState, event: JobEvent) -> bool:
    return (JobState(state), JobEvent(event)) in TRANSITIONS


def is_terminal(state: JobState) -> bool:
    return JobState(state) in TERMINAL
