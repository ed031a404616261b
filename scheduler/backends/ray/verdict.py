"""A gang's phase from what its replicas did. Pure: the backend feeds it observations.

A gang lives or dies whole: the first replica that fails (non-zero exit) or is lost
(its actor or node died) decides the outcome at once, and the backend then stops the
others. Only a gang whose every replica exited 0 succeeded. Once the pool asked for a
stop, whatever the replicas do next ends as STOPPED.
"""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.backends.base import Phase
from scheduler.backends.ray.layout import signal_message


@dataclass(frozen=True)
class Exit:
    code: int | None  # None: stopped before it ever started
    at: float


@dataclass(frozen=True)
class Death:
    node: str
    message: str
    at: float


@dataclass(frozen=True)
class Verdict:
    phase: Phase
    exit_code: int | None = None
    node: str | None = None
    message: str = ""
    at: float | None = None

    @property
    def final(self) -> bool:
        return self.phase in (Phase.SUCCEEDED, Phase.FAILED, Phase.LOST, Phase.STOPPED)


def judge(
    world: int,
    nodes: list[str],
    running: set[int],
    exits: dict[int, Exit],
    deaths: dict[int, Death],
    stop_at: float | None,
) -> Verdict:
    """``nodes[rank]`` is each replica's pool node. Call it while no final verdict was
    reached yet; the caller keeps the first final one."""
    done = set(exits) | set(deaths)
    if stop_at is not None:
        if len(done) >= world:
            at = max([e.at for e in exits.values()] + [d.at for d in deaths.values()], default=stop_at)
            return Verdict(Phase.STOPPED, at=at, message="stopped on request")
        return Verdict(Phase.STOPPING)
    if deaths:
        rank, death = min(deaths.items(), key=lambda kv: (kv[1].at, kv[0]))
        return Verdict(Phase.LOST, node=death.node, at=death.at, message=f"rank {rank}: {death.message}")
    failed = {r: e for r, e in exits.items() if e.code != 0}
    if failed:
        rank, ex = min(failed.items(), key=lambda kv: (kv[1].at, kv[0]))
        text = signal_message(ex.code) if ex.code is not None else "did not start"
        return Verdict(
            Phase.FAILED, exit_code=ex.code, node=nodes[rank], at=ex.at, message=f"rank {rank}: {text}"
        )
    if len(exits) >= world:
        return Verdict(Phase.SUCCEEDED, exit_code=0, at=max(e.at for e in exits.values()))
    if len(running | done) >= world:
        return Verdict(Phase.RUNNING)
    return Verdict(Phase.STARTING)
