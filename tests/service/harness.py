"""A pool in a test: a store, the sim backend, a control loop and a hand-driven clock."""

from __future__ import annotations

from typing import Any

from scheduler.backends.sim import SimBackend
from scheduler.checkpoint_folder import DEFAULT_ROOT
from scheduler.control.loop import ControlLoop, LoopSettings
from scheduler.control.outcome import ApplyOptions
from scheduler.store import jobs as jobstore
from scheduler.store import orgs as orgstore
from scheduler.store.db import Database, open_database
from scheduler.store.tables import JobRow
from scheduler.store.view import PoolView
from values.domain import DEFAULT_PRIORITY_CLASSES, Flavor, JobSpec, Node, PriorityClass, TopologyPath
from values.lifecycle import JobState
from values.progress import ProgressRule
from values.quotas import FlavorQuota, Org
from values.snapshot import Policy
from values.validation import ValidationRule


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def nodes(count: int, accelerators: int = 8, flavor: str = "h100", racks: int = 1) -> list[Node]:
    return [
        Node(
            name=f"{flavor}-{i:02d}",
            flavor=flavor,
            accelerators=accelerators,
            topology=TopologyPath(rack=f"rack-{i % racks}"),
        )
        for i in range(count)
    ]


def orgs(**nominal: int) -> tuple[Org, ...]:
    return tuple(Org(name=name, quotas={"h100": FlavorQuota(nominal=n)}) for name, n in nominal.items())


class Pool:
    def __init__(
        self,
        url: str,
        *,
        node_list: list[Node] | None = None,
        org_list: tuple[Org, ...] | None = None,
        holder: str = "test-leader",
        clock: Clock | None = None,
        backend: SimBackend | None = None,
        db: Database | None = None,
        policy: Policy | None = None,
        priority_classes: tuple[PriorityClass, ...] = DEFAULT_PRIORITY_CLASSES,
        progress: ProgressRule | None = None,
        validation: ValidationRule | None = None,
        checkpoint_root: str = DEFAULT_ROOT,
    ) -> None:
        self.clock = clock or Clock()
        self.db = db or open_database(url)
        self.backend = backend or SimBackend(node_list or nodes(2), default_duration=100.0)
        with self.db.write() as s:
            orgstore.seed_from_config(s, org_list or orgs(a=8, b=8), self.clock())
        self.loop = ControlLoop(
            self.db,
            self.backend,
            PoolView(
                flavors=(Flavor(name="h100"),), priority_classes=priority_classes, policy=policy or Policy()
            ),
            settings=LoopSettings(
                holder=holder,
                lease_ttl=30.0,
                apply=ApplyOptions(
                    progress=progress or ProgressRule(),
                    validation=validation or ValidationRule(),
                    checkpoint_root=checkpoint_root,
                ),
            ),
            clock=self.clock,
        )

    def submit(
        self,
        org: str = "a",
        replicas: int = 1,
        accelerators: int = 8,
        priority_value: int = 500,
        **extra: Any,
    ) -> str:
        env = {k: str(v) for k, v in extra.pop("env", {}).items()}
        gang = {"replicas": replicas, "accelerators": accelerators, "flavor": "h100"}
        if "min_replicas" in extra:
            gang["min_replicas"] = extra.pop("min_replicas")
        spec = JobSpec.model_validate(
            {"name": extra.pop("name", "train"), "org": org, "gang": gang, "env": env, **extra}
        )
        self.clock.t += 0.001  # distinct submit times: the queue order is then the test's order
        with self.db.write() as s:
            sub = jobstore.submit(
                s, spec, priority=priority_value, now=self.clock(), submitted_by=None, client_request_id=None
            )
        return sub.job.id

    def cycle(self, advance: float = 0.0) -> None:
        self.clock.t += advance
        self.loop.cycle()

    def job(self, job_id: str) -> JobRow:
        with self.db.read() as s:
            return jobstore.get(s, job_id)

    def state(self, job_id: str) -> JobState:
        return JobState(self.job(job_id).state)

    def events(self, job_id: str) -> list[str]:
        with self.db.read() as s:
            return [e.event for e in jobstore.events(s, job_id)]
