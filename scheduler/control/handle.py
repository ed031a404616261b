"""What the HTTP layer may ask of the control loop, wherever the loop runs: wake it, read
whether it leads and when it last cycled (``/readyz``), read a gang's logs from its
backend, and the loop's metrics to serve beside the API's own (``/metrics``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from prometheus_client import Metric


@dataclass(frozen=True)
class LoopStatus:
    leader: bool
    last_cycle_at: float | None  # the loop's clock (wall time), None before a first cycle


class LoopUnavailable(RuntimeError):
    """The loop did not answer: its process exited or is stuck."""


class LoopHandle(Protocol):
    def wake(self) -> None:
        """Something changed that the next cycle should see soon; never blocks."""
        ...

    def status(self) -> LoopStatus: ...

    def logs(self, key: str, tail: int, now: float, replica: int | None = None) -> list[str] | None: ...

    def metric_families(self) -> list[Metric]:
        """Metrics the loop keeps apart from the server's registry (none in-process)."""
        ...
