"""Effective training time: of the accelerator time a job held, how much went into work
that was kept. Pure, no I/O; the store reads the attempts (``scheduler/store/goodput.py``).

Each attempt held its nodes from its admission to its release. Of that time:
- until it ran (its ``STARTED``) is ``startup`` on the first attempt and
  ``restart_overhead`` on later ones (placement, launch, rendezvous);
- an attempt ended early (restarted, preempted, failed) loses the time from its last
  checkpoint (or from its start, without one) to its end, under the reason that ended it:
  ``hang``, ``straggler``, ``preemption`` or ``failure`` (every other category);
- the rest is productive: an attempt that succeeded, still runs, or was cancelled kept
  its work (a cancel is the owner's choice, not lost to the pool).

The ratio is productive over held, both weighted by the attempt's accelerators. Time a
straggler slowed a gang that then ran on is not subtracted: the work was kept, only late.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

STARTUP, RESTART_OVERHEAD = "startup", "restart_overhead"
HANG, STRAGGLER, PREEMPTION, FAILURE = "hang", "straggler", "preemption", "failure"
LOSSES = (STARTUP, RESTART_OVERHEAD, FAILURE, HANG, STRAGGLER, PREEMPTION)


@dataclass(frozen=True, slots=True)
class Attempt:
    attempt: int
    accelerators: int
    held_from: float
    held_until: float  # its release, or now while it holds its nodes
    running_from: float | None  # its STARTED; None: it never ran
    last_checkpoint_at: float | None  # the newest checkpoint stored during it
    # What ended it early (a loss reason above), or None: it succeeded, runs, or was cancelled.
    lost_to: str | None = None


@dataclass
class Goodput:
    held: float = 0.0  # accelerator-seconds
    productive: float = 0.0
    lost: dict[str, float] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        return self.productive / self.held if self.held > 0 else None

    def add(self, other: Goodput) -> None:
        self.held += other.held
        self.productive += other.productive
        for reason, seconds in other.lost.items():
            self.lost[reason] = self.lost.get(reason, 0.0) + seconds

    def as_dict(self) -> dict[str, object]:
        return {
            "effective_time_ratio": None if self.ratio is None else round(self.ratio, 4),
            "held_accelerator_hours": round(self.held / 3600, 4),
            "productive_accelerator_hours": round(self.productive / 3600, 4),
            "lost_accelerator_hours": {r: round(self.lost.get(r, 0.0) / 3600, 4) for r in LOSSES},
        }


def _clip(start: float, end: float, since: float, until: float) -> float:
    return max(0.0, min(end, until) - max(start, since))


def account(
    attempts: Iterable[Attempt], since: float = float("-inf"), until: float = float("inf")
) -> Goodput:
    """The attempts' time within [since, until], split as the module says."""
    out = Goodput()
    for a in attempts:
        end = max(a.held_from, a.held_until)
        held = _clip(a.held_from, end, since, until)
        if held <= 0:
            continue
        ran = min(max(a.running_from, a.held_from), end) if a.running_from is not None else end
        overhead = _clip(a.held_from, ran, since, until)
        kept_until = end
        if a.lost_to is not None:
            kept_until = ran if a.last_checkpoint_at is None else min(max(a.last_checkpoint_at, ran), end)
        lost = _clip(kept_until, end, since, until)
        k = a.accelerators
        out.held += k * held
        out.productive += k * max(0.0, held - overhead - lost)
        if overhead > 0:
            reason = STARTUP if a.attempt == 0 else RESTART_OVERHEAD
            out.lost[reason] = out.lost.get(reason, 0.0) + k * overhead
        if lost > 0 and a.lost_to is not None:
            out.lost[a.lost_to] = out.lost.get(a.lost_to, 0.0) + k * lost
    return out
