"""The cycle's named actions, and the order a policy runs them in (``Policy.actions``).

Adding a step to the cycle is one module here with one ``Action`` subclass, listed in
``ACTIONS``; a policy names it where it should run.
"""

from __future__ import annotations

from collections.abc import Iterable

from scheduler.core.actions.allocate import Allocate
from scheduler.core.actions.base import Action, Ask, Outcome
from scheduler.core.actions.evacuate import Evacuate
from scheduler.core.actions.grow import Grow
from scheduler.core.actions.least_attained import LeastAttained
from scheduler.core.actions.preempt import Preempt
from scheduler.core.actions.reserve import Reserve

ACTIONS: dict[str, Action] = {
    a.name: a for a in (Evacuate(), Allocate(), Preempt(), Reserve(), LeastAttained(), Grow())
}

__all__ = ["ACTIONS", "Action", "Ask", "Outcome", "resolve", "unknown"]


def unknown(names: Iterable[str]) -> list[str]:
    return [n for n in names if n not in ACTIONS]


def resolve(names: Iterable[str]) -> tuple[Action, ...]:
    names = tuple(names)
    missing = unknown(names)
    if missing:
        raise ValueError(f"unknown action(s) {', '.join(map(repr, missing))}; known: {', '.join(ACTIONS)}")
    return tuple(ACTIONS[n] for n in names)


def walks(action: Action) -> bool:
    """Whether the action settles jobs in the queue walk (else it only works before or after)."""
    return type(action).attempt is not Action.attempt
