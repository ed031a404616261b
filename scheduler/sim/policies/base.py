"""A simulated policy: a core ``Policy`` (its knobs and its actions) plus what only a
simulation can supply: priorities that change with time or service (Tiresias' queues)
and cycles it wants although nothing happens. Every decision is the core's, so every
policy shares the same placement code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

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

    def next_wakeup(self, sim: Simulation, now: float) -> float | None:
        return None
