"""A gang's phase from what its replicas did: the one rule for every backend.

Backends only observe replicas (started, exited with a code, lost with their node or
pod); this module judges the gang, so Ray, Kubernetes and sim can not disagree on
what an exit means. The scenario table is ``tests/backends/test_gang_phase.py``.

Why each rule is what it is:
- A non-zero exit is held for ``window`` seconds before it is the job's own failure.
  When a node dies under a gang, the surviving ranks' collective loses its peer and
  they exit non-zero at once, while the backend notices the node seconds later; a
  replica lost within the window makes the failure the infrastructure's (LOST).
- A gang the pool asked to stop is STOPPED whatever its replicas exit with: the SDK's
  SIGTERM hook saves a checkpoint and exits 0, which says nothing about the job being
  done. Only a gang whose every replica exited 0 before the stop succeeded.
- ``settled`` says every replica is gone (exited, or lost with its node or pod): until
  then the gang's nodes are still in use and its capacity must stay held.
"""

from __future__ import annotations

import signal
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from scheduler.backends.base import GangStatus, Phase
from values.progress import RankReport


class ReplicaState(StrEnum):
    PENDING = "pending"  # not started yet (being placed, pulling, spawning)
    RUNNING = "running"
    EXITED = "exited"  # its process ended; ``exit_code`` None: it never started
    LOST = "lost"  # the infrastructure took it: its node died, its actor or pod was removed


PENDING, RUNNING, EXITED, LOST = (
    ReplicaState.PENDING, ReplicaState.RUNNING, ReplicaState.EXITED, ReplicaState.LOST
)  # fmt: skip
GONE = frozenset({ReplicaState.EXITED, ReplicaState.LOST})
FINAL = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.LOST, Phase.STOPPED})


@dataclass(frozen=True)
class Replica:
    rank: int
    node: str | None
    state: ReplicaState = ReplicaState.PENDING
    exit_code: int | None = None
    at: float | None = None  # when it reached this state
    message: str = ""

    @property
    def gone(self) -> bool:
        return self.state in GONE

    @property
    def failed(self) -> bool:
        return self.state is ReplicaState.EXITED and self.exit_code != 0


@dataclass(frozen=True)
class Judgement:
    phase: Phase
    exit_code: int | None = None
    node: str | None = None  # the replica's node that decided a FAILED or LOST gang
    message: str = ""
    at: float | None = None
    settled: bool = False  # every replica gone: the capacity may be released


def gang_phase(
    replicas: Sequence[Replica], *, stop_requested_at: float | None, now: float, window: float
) -> Judgement:
    """``replicas`` in rank order; ``window``: how long a non-zero exit waits for a loss."""
    settled = bool(replicas) and all(r.gone for r in replicas)
    last = max((r.at for r in replicas if r.gone and r.at is not None), default=None)
    clean = [r for r in replicas if r.state is ReplicaState.EXITED and r.exit_code == 0]
    if (replicas and len(clean) == len(replicas)) and (
        stop_requested_at is None or all(r.at is not None and r.at < stop_requested_at for r in clean)
    ):
        return Judgement(Phase.SUCCEEDED, exit_code=0, at=last, settled=True)
    if stop_requested_at is not None:
        if settled:
            return Judgement(Phase.STOPPED, at=last, message="stopped on request", settled=True)
        return Judgement(Phase.STOPPING)
    lost = _first(r for r in replicas if r.state is ReplicaState.LOST)
    if lost is not None:
        return Judgement(
            Phase.LOST, node=lost.node, at=lost.at, message=f"rank {lost.rank}: {lost.message or 'lost'}",
            settled=settled,
        )  # fmt: skip
    failed = _first(r for r in replicas if r.failed)
    if failed is not None and (failed.at is None or now >= failed.at + window):
        return Judgement(
            Phase.FAILED, exit_code=failed.exit_code, node=failed.node, at=failed.at,
            message=f"rank {failed.rank}: {failed.message or exit_text(failed.exit_code)}", settled=settled,
        )  # fmt: skip
    if replicas and all(r.state is not ReplicaState.PENDING for r in replicas):
        return Judgement(Phase.RUNNING)
    return Judgement(Phase.STARTING)


def decided_at(replicas: Sequence[Replica], window: float) -> float | None:
    """When a held non-zero exit becomes the job's own failure (for a loop that wakes
    for foreseen changes); None when no exit is held."""
    held = [r.at + window for r in replicas if r.failed and r.at is not None]
    return min(held, default=None)


def _first(found: Iterable[Replica]) -> Replica | None:
    """The earliest by time, then rank (deterministic for replicas seen in one poll)."""
    return min(found, key=lambda r: (r.at if r.at is not None else float("inf"), r.rank), default=None)


def exit_text(code: int | None) -> str:
    """Exit codes as a shell reports them (128+N: killed by signal N), or as Python's
    subprocess does (-N)."""
    if code is None:
        return "did not start"
    number = code - 128 if code > 128 else -code if code < 0 else 0
    if number:
        try:
            return f"exit code {code} (killed by {signal.Signals(number).name})"
        except ValueError:
            pass
    return f"exit code {code}"


def status_of(
    key: str,
    job_id: str,
    attempt: int,
    replicas: Sequence[Replica],
    *,
    stop_requested_at: float | None,
    now: float,
    window: float,
    checkpoint: tuple[int, str] | None = None,
    progress: tuple[RankReport, ...] = (),
) -> GangStatus:
    """What a backend reports for one gang: its replicas, judged by :func:`gang_phase`."""
    j = gang_phase(replicas, stop_requested_at=stop_requested_at, now=now, window=window)
    return GangStatus(
        key=key, job_id=job_id, attempt=attempt, phase=j.phase, exit_code=j.exit_code, message=j.message,
        node=j.node, at=j.at, checkpoint=checkpoint, progress=progress, settled=j.settled,
    )  # fmt: skip
