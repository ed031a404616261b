"""State over time for one subject (a node, a link, a rack): rise slowly, fall slower.

A level must be signalled continuously for its rise time before the state takes it; a
state falls only once nothing at or above it has been signalled for the quiet period,
and then only to the worst level still seen within that period. A flapping link is
signalled on and off: it keeps the state up (the quiet period never completes) instead
of flapping the node between healthy and degraded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from values.domain import Health


class Level(IntEnum):
    OK = 0
    DEGRADED = 1
    UNHEALTHY = 2

    @property
    def health(self) -> Health:
        return (Health.HEALTHY, Health.DEGRADED, Health.UNHEALTHY)[self.value]

    @classmethod
    def of(cls, health: Health | str) -> Level:
        return cls((Health.HEALTHY, Health.DEGRADED, Health.UNHEALTHY).index(Health(health)))


@dataclass
class Hysteresis:
    degrade_after: float
    unhealthy_after: float
    quiet: float
    state: Level = Level.OK
    since: float | None = None
    # Per level: since when the signal has been at or above it without a break, and
    # when it was last at or above it.
    _held_since: dict[Level, float] = field(default_factory=dict)
    _last_seen: dict[Level, float] = field(default_factory=dict)

    def step(self, signal: Level, now: float) -> Level:
        """Feed the signal of one evaluation; returns the state after it."""
        for level in (Level.DEGRADED, Level.UNHEALTHY):
            if signal >= level:
                self._held_since.setdefault(level, now)
                self._last_seen[level] = now
            else:
                self._held_since.pop(level, None)
        rise_to = self.state
        for level, after in ((Level.DEGRADED, self.degrade_after), (Level.UNHEALTHY, self.unhealthy_after)):
            held = self._held_since.get(level)
            if level > rise_to and held is not None and now - held >= after:
                rise_to = level
        if rise_to > self.state:
            return self._move(rise_to, now)
        if self.state > Level.OK:
            last = self._last_seen.get(self.state)
            if last is None or now - last >= self.quiet:
                fall_to = Level.OK
                for level in (Level.DEGRADED,):
                    seen = self._last_seen.get(level)
                    if level < self.state and seen is not None and now - seen < self.quiet:
                        fall_to = level
                return self._move(fall_to, now)
        return self.state

    def restore(self, state: Level, since: float | None, now: float) -> None:
        self.state, self.since = state, since
        for level in (Level.DEGRADED, Level.UNHEALTHY):
            if level <= state:
                self._last_seen[level] = now

    def _move(self, to: Level, now: float) -> Level:
        self.state = to
        self.since = now
        return to
