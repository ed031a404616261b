"""How a cycle's decisions take effect: one order and one meaning for the service, the
simulator, the benchmark and the plan command, each of which keeps its pool differently
(the store; virtual time; an in-memory state that also checks the core; a dry run).

What each effect means, wherever it is applied:
- **place**: the gang starts on the placement's nodes now (the service: ``ADMIT`` and an
  allocation, launched by ``act``); a job that changed since ``decide`` saw it is skipped.
- **preempt**: the victim is asked to stop with its grace period; it keeps its nodes until
  it is gone, then goes back to the queue remembering whom it made room for
  (``preempted_by``: it may not preempt that job back), and that job is nominated
  (:func:`nominated`: it goes first until it is placed).
- **reject**: the job leaves the queue for good.

Placements go first: a core that placed a gang on capacity it had only just asked to free
is then caught (the benchmark checks capacity as it applies), and no backend is asked to
launch beside a victim before that victim's stop was asked in the same cycle anyway
(``act`` stops before it launches).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

from values.decisions import Decisions, Placement, Preemption, Rejection
from values.snapshot import PendingJob


class Pool(Protocol):
    """What an applier changes; each method says whether the effect took place."""

    def place(self, placement: Placement) -> bool: ...

    def preempt(self, preemption: Preemption) -> bool: ...

    def reject(self, rejection: Rejection) -> bool: ...


@dataclass(slots=True)
class Applied:
    placed: int = 0
    preempted: int = 0
    rejected: int = 0


def apply_decisions(decisions: Decisions, pool: Pool) -> Applied:
    out = Applied()
    for placement in decisions.placements:
        out.placed += pool.place(placement)
    for preemption in decisions.preemptions:
        out.preempted += pool.preempt(preemption)
    for rejection in decisions.rejections:
        out.rejected += pool.reject(rejection)
    return out


def nominated(beneficiary: PendingJob) -> PendingJob:
    """The job a preemption made room for, once its victims are gone."""
    return beneficiary if beneficiary.nominated else replace(beneficiary, nominated=True)
