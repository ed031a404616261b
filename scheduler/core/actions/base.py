"""What an action is: one named step of the cycle over its working state.

Actions run in the order the policy lists them (``Policy.actions``), as KAI-Scheduler's
and Volcano's do. Each may work on the whole cycle before the queue walk (``before``),
on each pending job in queue order until one settles it (``attempt``), and after the walk
(``after``). A job no action settles waits, with the reason the walk records.

``frees_capacity`` is an action's promise about the cycle's failure memo: a job that
failed is taken to fail again for every later job of its kind in the cycle, which holds
only while free capacity, lendable quota and possible victims only shrink. An action
that can make room appear mid-walk (stopping a job at once, shrinking a gang) declares
it, and the walk forgets what it memoized each time that action has had a job.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, ClassVar

from quota.accounting import Verdict
from scheduler.core.pool import Shape
from values.snapshot import PendingJob

if TYPE_CHECKING:
    from scheduler.core.decide import Cycle


class Outcome(Enum):
    PLACED = "placed"
    PREEMPTING = "preempting"  # victims asked to stop for it: it waits for them, first
    WAITING = "waiting"  # it waits, its status recorded (a reservation, say)


@dataclass(slots=True)
class Ask:
    """One pending job's turn in the walk, and what the actions learnt on the way."""

    job: PendingJob
    shape: Shape
    verdicts: list[tuple[str, Verdict]]  # per flavor the job may use, the quota book's answer
    capacity_fail: str | None = None  # a flavor where quota allowed it but nodes did not
    blocked_by: str | None = None  # an earlier job of its org it may not overtake


class Action:
    name: ClassVar[str]
    frees_capacity: ClassVar[bool] = False

    def before(self, cycle: Cycle) -> None:
        """Work on the whole cycle, before the queue walk."""

    def attempt(self, cycle: Cycle, ask: Ask) -> Outcome | None:
        """Settle ``ask.job`` (None: leave it to the next action)."""
        return None

    def after(self, cycle: Cycle) -> None:
        """Work on what the walk left, once it is done."""
