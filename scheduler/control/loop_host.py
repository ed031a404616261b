"""What runs beside the control loop, wherever it runs: the backend, the loop and the
health evaluation (which only evaluates on the leader, writes verdicts the loop reads,
and publishes them through the backend), and the answers the HTTP layer asks of them.

In a thread of the API's process a ``LoopHost`` is itself the API's ``LoopHandle``; in a
child process (``loop_process``) it answers the same questions over a pipe.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Metric

from scheduler.backends.registry import build_backend
from scheduler.config import PoolConfig
from scheduler.control.handle import LoopStatus
from scheduler.control.loop import ControlLoop, LoopSettings
from scheduler.control.options import ServerOptions, backend_settings, checkpoint_root
from scheduler.control.outcome import ApplyOptions
from scheduler.control.wake import Doorbell, Wake
from scheduler.health.metrics import HealthMetrics
from scheduler.health.service import HealthService
from scheduler.health.thresholds import load_thresholds
from scheduler.metrics import Metrics
from scheduler.store.db import Database
from scheduler.store.view import PoolView


@dataclass
class LoopHost:
    loop: ControlLoop
    timing: Wake
    health: HealthService | None = None

    @classmethod
    def build(
        cls,
        opts: ServerOptions,
        db: Database,
        config: PoolConfig,
        metrics: Metrics,
        doorbell: Doorbell | None = None,
    ) -> LoopHost:
        backend = build_backend(opts.backend, backend_settings(opts, db, config))
        settings = LoopSettings(
            pace=opts.pace,
            lease_ttl=opts.lease_ttl,
            apply=ApplyOptions(
                checkpoint_root=str(checkpoint_root(opts, db)),
                progress=config.progress,
                validation=config.validation,
                visibility={f.name: f.visibility_env for f in config.flavors},
            ),
        )
        loop = ControlLoop(db, backend, PoolView.from_config(config), settings=settings, metrics=metrics)
        timing = Wake(opts.pace, doorbell)
        health = HealthService(
            db,
            load_thresholds(),
            metrics=HealthMetrics.of(metrics.registry),
            is_leader=lambda: loop.is_leader,
            publish=getattr(backend, "set_network_health", None),
            changed=timing.ring,
        )
        return cls(loop, timing, health)

    # --- the LoopHandle, in this process --------------------------------------------
    def wake(self) -> None:
        self.timing.ring()

    def status(self) -> LoopStatus:
        return LoopStatus(leader=self.loop.is_leader, last_cycle_at=self.loop.last_cycle_at)

    def logs(self, key: str, tail: int, now: float, replica: int | None = None) -> list[str] | None:
        return self.loop.backend.logs(key, tail, now, replica)

    def metric_families(self) -> list[Metric]:
        return []  # the loop writes into the server's own registry

    def close(self) -> None:
        """After the loop and the health evaluation stopped: the backend's connections."""
        self.loop.backend.close()
