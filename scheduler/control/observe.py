"""Observe: what the backend runs now, read once per cycle before anything is written.

Level-triggered: the backend reports every gang it knows, each judged by the one
gang-phase rule (``scheduler.backends.gang_phase``), and the inventory of its nodes.
Nothing here writes; ``persist`` compares it with the store.
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.backends.base import Backend, GangStatus
from values.domain import Node


@dataclass(frozen=True)
class Observation:
    at: float
    nodes: list[Node]
    gangs: dict[str, GangStatus]  # by gang key (job id / attempt)


def observe(backend: Backend, now: float) -> Observation:
    nodes = backend.inventory(now)
    return Observation(now, nodes, {g.key: g for g in backend.gangs(now)})
