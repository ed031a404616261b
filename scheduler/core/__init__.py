"""The pure decision core: ``decide(snapshot, now) -> Decisions``.

Nothing in this package reads a clock, a database or a backend; the same snapshot and
time always give the same decisions, which is what lets the simulator and the service
share it.
"""

from scheduler.core.decide import decide

__all__ = ["decide"]
