"""Progress from training code, and the two verdicts the pool draws from it. Pure, no I/O.

Every rank reports its step and its own step time (``scheduler.sdk.report_progress``);
the backend carries the latest report per rank, and the control loop keeps, per gang,
when each rank's step last rose, on the server's clock (``advance``), so that node clocks
never matter. From that:

- a **hang** (``hang``): some rank has not advanced for ``max(hang_factor x the gang's
  median step time, hang_floor_seconds)`` while the gang runs. A collective that never
  returns stops every rank; a rank stuck alone stops its own. Nothing is judged before
  a rank's first report, so a job that never reports is never called hung.
- a **straggler** (``straggler``): a rank whose step time stays at least
  ``straggler_ratio`` times its peers' median for ``straggler_after_seconds``. Entering
  needs the ratio, leaving needs it to fall below halfway back to 1 (hysteresis), so a
  rank at the edge does not flap. Step times are each rank's own compute time where the
  code passes it: in synchronous training every rank's wall time per step is the slowest
  one's, so wall time alone cannot tell which rank is slow.

A straggler's gang is moved (``Straggler.move``) once the time it has already lost to the
slow rank reaches what a move would cost (the work since its last checkpoint plus
``restart_overhead_seconds``): the break-even rule of ski rental, which never loses more
than twice what the best choice in hindsight would have.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace

from pydantic import BaseModel, ConfigDict, Field

from values.strict import Int, Number


class ProgressRule(BaseModel):
    """The ``progress:`` section of the pool's file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    hang_factor: Number = Field(10.0, ge=1, le=10_000)
    hang_floor_seconds: Number = Field(600.0, ge=1, le=7 * 86_400)
    straggler_ratio: Number = Field(1.5, gt=1, le=100)
    straggler_after_seconds: Number = Field(300.0, ge=0, le=7 * 86_400)
    # What a move costs besides the work since the last checkpoint: stop, requeue, start
    # and load the checkpoint.
    restart_overhead_seconds: Number = Field(120.0, ge=0, le=86_400)
    # Fewer ranks than this with a step time: no peers to compare with.
    straggler_min_ranks: Int = Field(2, ge=2, le=100_000)

    @property
    def straggler_clear_ratio(self) -> float:
        return 1.0 + (self.straggler_ratio - 1.0) / 2.0


@dataclass(frozen=True, slots=True)
class RankReport:
    """One rank's latest report, as a backend saw it."""

    rank: int
    step: int
    step_seconds: float | None = None  # the rank's recent median step time
    node: str | None = None


@dataclass(frozen=True, slots=True)
class RankTrack:
    rank: int
    step: int
    step_seconds: float | None
    advanced_at: float  # the server's clock when this rank's step last rose
    node: str | None = None
    slow_since: float | None = None  # a straggler from then on, until it recovers


@dataclass(frozen=True, slots=True)
class GangProgress:
    """What the server keeps of one attempt's progress."""

    attempt: int
    ranks: tuple[RankTrack, ...]
    first_step: int  # the lowest step first seen this attempt, and when
    first_at: float

    @property
    def step(self) -> int:
        return min(r.step for r in self.ranks)

    @property
    def last_advance(self) -> float:
        return min(r.advanced_at for r in self.ranks)

    @property
    def median_step_seconds(self) -> float | None:
        times = [r.step_seconds for r in self.ranks if r.step_seconds is not None]
        return statistics.median(times) if times else None

    def steps_per_second(self) -> float | None:
        """Over this attempt so far, from what the server saw."""
        advanced = max(r.advanced_at for r in self.ranks) - self.first_at
        done = self.step - self.first_step
        return done / advanced if advanced > 0 and done > 0 else None

    def to_dict(self) -> dict[str, object]:
        return {
            "attempt": self.attempt,
            "first_step": self.first_step,
            "first_at": self.first_at,
            "ranks": [asdict(r) for r in self.ranks],
        }

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> GangProgress:
        ranks = d["ranks"]
        assert isinstance(ranks, list)
        return cls(
            attempt=int(d["attempt"]),  # type: ignore[call-overload]
            ranks=tuple(RankTrack(**r) for r in ranks),
            first_step=int(d["first_step"]),  # type: ignore[call-overload]
            first_at=float(d["first_at"]),  # type: ignore[arg-type]
        )


def advance(
    previous: GangProgress | None,
    attempt: int,
    reports: Iterable[RankReport],
    now: float,
    rule: ProgressRule,
) -> GangProgress | None:
    """The gang's progress after this cycle's reports; None before its first report.
    A rank's clock restarts only when its step rises; a previous attempt's record is
    dropped."""
    if previous is not None and previous.attempt != attempt:
        previous = None
    before = {r.rank: r for r in previous.ranks} if previous is not None else {}
    tracks = dict(before)
    for rep in reports:
        old = before.get(rep.rank)
        if old is None:
            tracks[rep.rank] = RankTrack(rep.rank, rep.step, rep.step_seconds, now, rep.node)
        elif rep.step > old.step:
            tracks[rep.rank] = replace(old, step=rep.step, step_seconds=rep.step_seconds, advanced_at=now,
                                       node=rep.node or old.node)  # fmt: skip
    if not tracks:
        return None
    ranks = _mark_slow(sorted(tracks.values(), key=lambda r: r.rank), now, rule)
    if previous is None:
        return GangProgress(attempt, ranks, min(r.step for r in ranks), now)
    return replace(previous, ranks=ranks)


def _mark_slow(ranks: Sequence[RankTrack], now: float, rule: ProgressRule) -> tuple[RankTrack, ...]:
    timed = [r for r in ranks if r.step_seconds is not None and r.step_seconds > 0]
    if len(timed) < rule.straggler_min_ranks:
        return tuple(replace(r, slow_since=None) for r in ranks)
    out = []
    for r in ranks:
        peers = [p.step_seconds for p in timed if p.rank != r.rank and p.step_seconds is not None]
        if r.step_seconds is None or not peers:
            out.append(replace(r, slow_since=None))
            continue
        ratio = r.step_seconds / max(statistics.median(peers), 1e-9)
        if ratio >= rule.straggler_ratio:
            out.append(r if r.slow_since is not None else replace(r, slow_since=now))
        elif ratio < rule.straggler_clear_ratio:
            out.append(replace(r, slow_since=None))
        else:
            out.append(r)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Hang:
    rank: int
    node: str | None
    silent_seconds: float
    limit_seconds: float

    @property
    def message(self) -> str:
        where = f" on {self.node}" if self.node else ""
        return (
            f"hung: rank {self.rank}{where} made no progress for {self.silent_seconds:.0f}s "
            f"(limit {self.limit_seconds:.0f}s)"
        )


def hang_limit(progress: GangProgress, rule: ProgressRule) -> float:
    median = progress.median_step_seconds
    return max(rule.hang_factor * median if median is not None else 0.0, rule.hang_floor_seconds)


def hang(progress: GangProgress | None, now: float, rule: ProgressRule) -> Hang | None:
    """The stalest rank, if it has been silent past the limit."""
    if progress is None:
        return None
    limit = hang_limit(progress, rule)
    stalest = min(progress.ranks, key=lambda r: (r.advanced_at, r.rank))
    silent = now - stalest.advanced_at
    return Hang(stalest.rank, stalest.node, silent, limit) if silent > limit else None


@dataclass(frozen=True, slots=True)
class Straggler:
    rank: int
    node: str | None
    ratio: float  # its step time over its peers' median
    slow_seconds: float  # how long it has been slow
    lost_seconds: float  # gang time lost to it so far: slow_seconds x (1 - 1/ratio)
    move_cost_seconds: float
    move: bool

    @property
    def message(self) -> str:
        where = f" on {self.node}" if self.node else ""
        return (
            f"straggler: rank {self.rank}{where} steps {self.ratio:.2f}x slower than its peers for "
            f"{self.slow_seconds:.0f}s; {self.lost_seconds:.0f}s lost so far against "
            f"{self.move_cost_seconds:.0f}s a move costs"
        )


def straggler(
    progress: GangProgress | None, now: float, rule: ProgressRule, since_checkpoint: float
) -> Straggler | None:
    """The rank slow the longest, once it has been slow ``straggler_after_seconds``;
    ``since_checkpoint``: seconds of work a move would lose."""
    if progress is None:
        return None
    after = rule.straggler_after_seconds
    slow = [r for r in progress.ranks if r.slow_since is not None and now - r.slow_since >= after]
    if not slow:
        return None
    worst = min(slow, key=lambda r: (r.slow_since, r.rank))
    peers = [p.step_seconds for p in progress.ranks if p.rank != worst.rank and p.step_seconds]
    if worst.step_seconds is None or not peers:
        return None
    ratio = worst.step_seconds / max(statistics.median(peers), 1e-9)
    slow_for = now - worst.slow_since if worst.slow_since is not None else 0.0
    lost = slow_for * max(0.0, 1.0 - 1.0 / ratio)
    cost = max(0.0, since_checkpoint) + rule.restart_overhead_seconds
    return Straggler(worst.rank, worst.node, ratio, slow_for, lost, cost, move=lost >= cost)
