"""A simulated policy: the core ``Policy`` knobs plus optional steps of its own.

Baselines that the core's knobs express are just a ``Policy``; one that needs more
(Tiresias' least-attained-service priorities and cross-org preemption) adds steps here,
on top of the core's placement, so every policy shares the same placement code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from values.decisions import Decisions
from values.snapshot import Policy

if TYPE_CHECKING:
    from scheduler.sim.engine import SimJob, Simulation

NORMAL_PRIORITY = 500


class SimPolicy(Protocol):
    name: str
    core: Policy
    description: str
    dynamic_priority: bool  # priorities change with time or service: refresh each cycle

    def priority(self, job: SimJob, now: float) -> int: ...

    def after_decide(self, sim: Simulation, decisions: Decisions, now: float) -> list[tuple[str, str]]:
        """Extra preemptions (victim id, beneficiary id) after the core's decisions are applied."""
        ...

    def next_wakeup(self, sim: Simulation, now: float) -> float | None:
        """A time at which the policy wants a cycle although no event happens."""
        ...


class CorePolicy:
    """A policy that is exactly a set of core knobs."""

    dynamic_priority = False

    def __init__(self, name: str, core: Policy, description: str) -> None:
        self.name = name
        self.core = core
        self.description = description

    def priority(self, job: SimJob, now: float) -> int:
        return NORMAL_PRIORITY

    def after_decide(self, sim: Simulation, decisions: Decisions, now: float) -> list[tuple[str, str]]:
        return []

    def next_wakeup(self, sim: Simulation, now: float) -> float | None:
        return None
