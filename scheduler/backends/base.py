"""The one protocol every backend speaks to the control loop.

A gang is known by its key ``<job id>/<attempt>``: launching the same key twice is a
no-op, so the loop may retry a launch after a crash without starting a gang twice.
The backend reports every gang it knows, finished ones included, until the loop has
recorded the outcome and calls :meth:`Backend.forget`: reports are level-triggered and
survive a crash of the server between seeing an exit and storing it.

Backends observe replicas; one rule, ``scheduler.backends.gang_phase``, turns the
observations into a gang's phase for all of them. A gang holds its nodes until its
status is ``settled`` (every replica gone), whatever its phase says.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from values.domain import JobSpec, Node
from values.progress import RankReport


class Phase(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"  # asked to stop; in its grace period
    SUCCEEDED = "succeeded"  # every replica exited 0
    FAILED = "failed"  # the job's own failure (non-zero exit)
    LOST = "lost"  # infrastructure: node lost, backend error; not the job's fault
    STOPPED = "stopped"  # stopped on request


FINISHED = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.LOST, Phase.STOPPED})

# How long a non-zero exit waits for a replica loss that would make it the
# infrastructure's failure (gang_phase). Backends raise it to their node-loss detection time.
DEFAULT_CORRELATION_WINDOW = 3.0
# The survivors of a failed or lost gang get this long after SIGTERM before SIGKILL:
# their collective is broken, so there is no consistent checkpoint left to save.
SURVIVOR_GRACE = 2.0


def gang_key(job_id: str, attempt: int) -> str:
    return f"{job_id}/{attempt}"


@dataclass(frozen=True)
class Launch:
    job_id: str
    attempt: int
    spec: JobSpec
    flavor: str
    assignments: tuple[tuple[str, int], ...]  # (node, replicas) in rank order
    env: dict[str, str] = field(default_factory=dict)  # TRAINPOOL_* set by the pool

    @property
    def key(self) -> str:
        return gang_key(self.job_id, self.attempt)


# What a backend's failure message says when the replica was killed for the memory the
# job itself used (a container past its own limit; Ray's memory monitor): the job's own
# ``oom``, never the node's fault.
OOM_KILLED = "OOMKilled"
MEMORY_MONITOR_KILL = "killed by Ray's memory monitor"
JOBS_OWN_MEMORY = (OOM_KILLED, MEMORY_MONITOR_KILL)


@dataclass(frozen=True)
class GangStatus:
    key: str
    job_id: str
    attempt: int
    phase: Phase
    exit_code: int | None = None
    message: str = ""
    # The node blamed for a LOST or FAILED gang, if one is known.
    node: str | None = None
    at: float | None = None  # when it reached this phase
    # The newest checkpoint the gang's code reported through the SDK, as (step, path),
    # where the backend can see it (the Ray backend reads rank 0's manifest on its node,
    # the Kubernetes backend on the shared volume the server mounts; ``folder_reports``).
    # The loop stores it; backends that cannot see it leave None and jobs use the API.
    checkpoint: tuple[int, str] | None = None
    # Each rank's latest progress report of this attempt (``sdk.report_progress``), where
    # the backend can see them (beside the checkpoints, as above).
    progress: tuple[RankReport, ...] = ()
    # Every replica of this attempt is gone (or its node is): only then is the capacity free.
    settled: bool = False


class Backend(Protocol):
    name: str

    def inventory(self, now: float) -> list[Node]:
        """Every node with its current health."""
        ...

    def gangs(self, now: float) -> list[GangStatus]:
        """Every gang launched and not yet forgotten."""
        ...

    def launch(self, launch: Launch, now: float) -> None:
        """Start the gang; idempotent by key. Raises BackendError if it cannot."""
        ...

    def stop(self, key: str, grace_seconds: float, now: float) -> None:
        """SIGTERM, then kill after the grace period; idempotent; unknown keys are ignored."""
        ...

    def forget(self, key: str) -> None:
        """Drop a finished gang's record once its outcome is stored."""
        ...

    def logs(self, key: str, tail: int, now: float, replica: int | None = None) -> list[str] | None:
        """The gang's last ``tail`` log lines (one replica's, or all replicas' prefixed
        with their rank); None where the backend keeps none for it."""
        ...

    def close(self) -> None:
        """Release connections and threads; the gangs keep running."""
        ...


class BackendError(Exception):
    """The backend could not do what was asked; an infrastructure failure."""
