"""What one replay leaves behind: per-job records and the pool's step-function timeline.

The metrics (``scheduler.sim.metrics``) are pure functions of these, so they can be
tested on hand-made records without running anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class EstimateRecord:
    """A start estimate the job was shown while it waited for its first start."""

    kind: str  # "submit": the first one it got; "later": the first one an hour (or so) later
    made_at: float
    start: float | None  # None: unknown
    basis: str | None = None
    high: float | None = None  # the range's upper end, where there is one


@dataclass(slots=True)
class JobRecord:
    id: str
    org: str
    submit: float
    duration: float  # trace run time, without interruptions
    accelerators: int
    nodes: int  # replicas, i.e. nodes a failure can hit
    first_start: float | None = None
    end: float | None = None
    held_s: float = 0.0  # wall seconds the job held its accelerators, all attempts
    lost_failure_acc_s: float = 0.0
    lost_preemption_acc_s: float = 0.0
    lost_hang_acc_s: float = 0.0  # from the last checkpoint before a hang to its stop
    hangs: int = 0
    # Held time a slowed gang wasted (its slowness), and for a moved one the work since its
    # checkpoint and the restart; moves off a slow node.
    lost_straggler_acc_s: float = 0.0
    stragglers: int = 0
    # Accelerator-seconds below its full size while it held nodes (an elastic gang that
    # ran smaller); 0 for a rigid one.
    unheld_acc_s: float = 0.0
    preemptions: int = 0
    failures: int = 0
    rejected: str | None = None
    failed: bool = False  # its restart policy allowed no more restarts after a failure
    estimates: list[EstimateRecord] = field(default_factory=list)

    @property
    def completed(self) -> bool:
        return self.end is not None

    @property
    def jct(self) -> float:
        assert self.end is not None
        return self.end - self.submit


@dataclass
class Timeline:
    """Piecewise-constant state: segment ``i`` holds from ``times[i]`` to ``times[i+1]``
    (the last one to ``end``). Per segment and org: accelerators held (``alloc``) and
    wanted (``demand`` = held + pending); the number of pending jobs; and whether the org
    is below nominal with a pending job that fits within it (``violating``)."""

    orgs: tuple[str, ...]
    times: list[float] = field(default_factory=list)
    alloc: list[tuple[int, ...]] = field(default_factory=list)
    demand: list[tuple[int, ...]] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)
    violating: list[tuple[bool, ...]] = field(default_factory=list)
    # Per org, the most of its room below nominal its pending jobs could fill (0 unless
    # violating); None where the recorder did not give it.
    owed: list[tuple[int, ...] | None] = field(default_factory=list)
    end: float = 0.0

    def record(
        self,
        t: float,
        alloc: tuple[int, ...],
        demand: tuple[int, ...],
        pending: int,
        violating: tuple[bool, ...],
        owed: tuple[int, ...] | None = None,
    ) -> None:
        if self.times and self.times[-1] == t:
            self.alloc[-1], self.demand[-1], self.pending[-1], self.violating[-1] = (
                alloc,
                demand,
                pending,
                violating,
            )
            self.owed[-1] = owed
            return
        same = self.alloc and self.alloc[-1] == alloc and self.demand[-1] == demand
        if same and self.pending[-1] == pending and self.violating[-1] == violating and self.owed[-1] == owed:
            return  # nothing changed: keep one segment
        self.times.append(t)
        self.alloc.append(alloc)
        self.demand.append(demand)
        self.pending.append(pending)
        self.violating.append(violating)
        self.owed.append(owed)

    def arrays(self) -> TimelineArrays:
        n = len(self.orgs)
        times = np.array(self.times, dtype=float)
        ends = np.append(times[1:], self.end) if len(times) else times
        return TimelineArrays(
            orgs=self.orgs,
            start=times,
            dt=np.maximum(ends - times, 0.0),
            alloc=np.array(self.alloc, dtype=float).reshape(-1, n),
            demand=np.array(self.demand, dtype=float).reshape(-1, n),
            pending=np.array(self.pending, dtype=float),
            violating=np.array(self.violating, dtype=bool).reshape(-1, n),
            owed=(
                None if any(o is None for o in self.owed) else np.array(self.owed, dtype=float).reshape(-1, n)
            ),
        )


@dataclass(frozen=True)
class TimelineArrays:
    orgs: tuple[str, ...]
    start: np.ndarray  # segment start times
    dt: np.ndarray  # segment lengths
    alloc: np.ndarray  # segments x orgs
    demand: np.ndarray
    pending: np.ndarray
    violating: np.ndarray
    owed: np.ndarray | None = None  # segments x orgs, see Timeline.owed


@dataclass
class SimResult:
    policy: str
    jobs: list[JobRecord]
    timeline: Timeline
    capacity: int
    nominal: dict[str, int]
    weights: dict[str, float]
    preemptions: dict[str, int]  # by reason
    node_failures: int  # failures that hit at least one job
    cycles: int
    wall_s: float = 0.0
    unfinished: int = 0
    # The forecasts that made the jobs' estimates: how many, their steps and wall time;
    # None where no estimates were recorded.
    forecasts: dict[str, float] | None = None
    resizes: dict[str, int] = field(default_factory=dict)  # elastic gangs: grow, shrink

    def progress_at_end(self) -> tuple[float, int, int]:
        """(virtual time, jobs finished, jobs) as a progress bar's last tick shows them."""
        return self.timeline.end, len(self.jobs) - self.unfinished, len(self.jobs)
