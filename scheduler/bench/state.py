"""The benchmark's stand-in for the live loop's store: running and pending jobs, decayed
usage, and the applier that turns decisions into the next state.

The applier also checks what it applies (whole gangs, known nodes of the right flavor,
no node over capacity), so a fast but wrong core cannot post a good figure unnoticed.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from scheduler.applier import Applied, apply_decisions, nominated
from values.decisions import Decisions, Placement, Preemption, Rejection
from values.domain import Flavor, Node
from values.quotas import Org
from values.snapshot import PendingJob, Policy, RunningJob, Snapshot

MAX_VIOLATIONS_KEPT = 50


@dataclass
class PoolState:
    flavors: tuple[Flavor, ...]
    nodes: tuple[Node, ...]
    orgs: tuple[Org, ...]
    usage: dict[str, dict[str, float]]
    policy: Policy = field(default_factory=Policy)
    running: dict[str, RunningJob] = field(default_factory=dict)
    pending: dict[str, PendingJob] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    violation_count: int = 0

    def __post_init__(self) -> None:
        self._by_name = {n.name: n for n in self.nodes}
        # [accelerators, cpu, memory_gb] in use per node, kept incrementally.
        self._used: dict[str, list[float]] = {n.name: [0.0, 0.0, 0.0] for n in self.nodes}
        self._now = 0.0  # the time of the decisions being applied

    def snapshot(self) -> Snapshot:
        """What the live loop builds every cycle from its store (this is timed)."""
        return Snapshot(
            flavors=self.flavors,
            nodes=self.nodes,
            orgs=self.orgs,
            running=tuple(self.running.values()),
            pending=tuple(self.pending.values()),
            usage={org: dict(per_flavor) for org, per_flavor in self.usage.items()},
            policy=self.policy,
        )

    def arrive(self, jobs: list[PendingJob]) -> None:
        for job in jobs:
            self.pending[job.id] = job

    def apply(self, decisions: Decisions, now: float) -> Applied:
        """Placements start now; victims exit at once and are requeued; rejected jobs leave."""
        self._now = now
        return apply_decisions(decisions, self)

    def place(self, placement: Placement) -> bool:
        return self._start(placement, self._now)

    def preempt(self, preemption: Preemption) -> bool:
        job = self.running.get(preemption.job_id)
        if job is None:
            self._violate(f"preempted {preemption.job_id}, which is not running")
            return False
        self._release(job)
        self.pending[job.id] = PendingJob(
            id=job.id,
            spec=job.spec,
            priority=job.priority,
            submitted_at=job.submitted_at,
            preempted_by=preemption.beneficiary,
        )
        beneficiary = self.pending.get(preemption.beneficiary or "")
        if beneficiary is not None:
            self.pending[beneficiary.id] = nominated(beneficiary)
        return True

    def reject(self, rejection: Rejection) -> bool:
        return self.pending.pop(rejection.job_id, None) is not None

    def finish(self, fraction: float, rng: np.random.Generator) -> int:
        """A random ``fraction`` of running jobs end (at least one, if any run)."""
        if not self.running:
            return 0
        count = max(1, round(fraction * len(self.running)))
        ids = list(self.running)
        for i in rng.choice(len(ids), size=min(count, len(ids)), replace=False):
            self._release(self.running[ids[i]])
        return count

    def decay_usage(self, dt: float, half_life_s: float) -> None:
        """Usage decays by the half-life and grows by what each org held during ``dt``."""
        factor = math.pow(2.0, -dt / half_life_s)
        held: dict[tuple[str, str], float] = defaultdict(float)
        for job in self.running.values():
            held[(job.spec.org, job.flavor)] += job.accelerators
        for org, per_flavor in self.usage.items():
            for flavor in per_flavor:
                per_flavor[flavor] = per_flavor[flavor] * factor + held[(org, flavor)] * dt

    def used_accelerators(self) -> int:
        return int(sum(u[0] for u in self._used.values()))

    def nodes_over_capacity(self) -> list[str]:
        """Recomputed from the running jobs alone, independent of the incremental counts."""
        used: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
        for job in self.running.values():
            gang = job.spec.gang
            for node, replicas in job.assignments:
                u = used[node]
                u[0] += replicas * gang.accelerators
                u[1] += replicas * gang.cpu
                u[2] += replicas * gang.memory_gb
        return [name for name, u in used.items() if name not in self._by_name or self._over(name, u)]

    def _start(self, p: Placement, now: float) -> bool:
        job = self.pending.get(p.job_id)
        if job is None:
            self._violate(f"placed {p.job_id}, which is not pending")
            return False
        gang = job.spec.gang
        if p.flavor not in gang.flavors:
            self._violate(f"placed {p.job_id} on flavor {p.flavor}, which it does not accept")
        if sum(n for _, n in p.assignments) != gang.replicas:
            self._violate(f"placed {p.job_id} partly: {p.assignments} for {gang.replicas} replicas")
        for name, replicas in p.assignments:
            node = self._by_name.get(name)
            if node is None:
                self._violate(f"placed {p.job_id} on unknown node {name}")
                continue
            if node.flavor != p.flavor:
                self._violate(f"placed {p.job_id} as {p.flavor} on {name}, a {node.flavor} node")
            u = self._used[name]
            u[0] += replicas * gang.accelerators
            u[1] += replicas * gang.cpu
            u[2] += replicas * gang.memory_gb
            if self._over(name, u):
                self._violate(f"placing {p.job_id} put node {name} over capacity")
        del self.pending[p.job_id]
        self.running[p.job_id] = RunningJob(
            id=job.id,
            spec=job.spec,
            priority=job.priority,
            submitted_at=job.submitted_at,
            started_at=now,
            flavor=p.flavor,
            assignments=p.assignments,
        )
        return True

    def _release(self, job: RunningJob) -> None:
        gang = job.spec.gang
        for name, replicas in job.assignments:
            u = self._used.get(name)
            if u is not None:
                u[0] -= replicas * gang.accelerators
                u[1] -= replicas * gang.cpu
                u[2] -= replicas * gang.memory_gb
        del self.running[job.id]

    def _over(self, name: str, used: list[float]) -> bool:
        node = self._by_name[name]
        # A small epsilon: CPU and memory are floats summed in different orders.
        return used[0] > node.accelerators or used[1] > node.cpu + 1e-6 or used[2] > node.memory_gb + 1e-6

    def _violate(self, message: str) -> None:
        self.violation_count += 1
        if len(self.violations) < MAX_VIOLATIONS_KEPT:
            self.violations.append(message)
