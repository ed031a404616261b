"""The synthetic pool and queue of `trainpool bench scheduler`, generated from a seed.

Two flavors share the nodes half and half; racks of 32 nodes, 8 racks a spine. Orgs'
demand follows a Zipf-like skew and their nominal quotas (another skew, some orgs 0) sum
to the pool, with borrowing unbounded. Job sizes follow the Philly trace's mix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from scheduler.bench.philly import ACCELERATORS_PER_NODE, gang_for, sample_gpu_counts
from values.domain import (
    DEFAULT_PRIORITY_CLASSES,
    Flavor,
    Gang,
    Health,
    JobSpec,
    Node,
    TopologyConstraint,
    TopologyPath,
)
from values.quotas import FlavorQuota, Org
from values.snapshot import PendingJob

FLAVORS = (
    Flavor(name="h100", vendor="nvidia", visibility_env="CUDA_VISIBLE_DEVICES"),
    Flavor(name="ascend-910b", vendor="huawei", visibility_env="ASCEND_RT_VISIBLE_DEVICES"),
)
RACK_NODES = 32
SPINE_RACKS = 8
NODE_CPU = 128.0
NODE_MEMORY_GB = 2048.0

# Shares of the queue; the rest of each row is implied.
ONE_FLAVOR_SHARE = 0.9  # the others accept both flavors, in a random preference order
PRIORITY_SHARES = {"low": 0.25, "normal": 0.6, "high": 0.15}
MAX_RUNTIME_SHARE = 0.6  # jobs that declare max_runtime (what backfill can plan with)
MAX_RUNTIME_RANGE_S = (600.0, 7 * 86_400.0)  # log-uniform
RACK_PREFERRED_SHARE = 0.5  # of multi-node gangs
RACK_REQUIRED_SHARE = 0.1  # of multi-node gangs
DEMAND_ZIPF_S = 1.1
QUOTA_ZIPF_S = 0.8
ZERO_QUOTA_EVERY = 5  # every 5th org has no nominal quota: it only borrows
MEAN_INTERARRIVAL_S = 2.0

_PREFERRED_RACK = TopologyConstraint(level="rack", mode="preferred")
_REQUIRED_RACK = TopologyConstraint(level="rack", mode="required")
_PRIORITY_VALUE = {p.name: p.value for p in DEFAULT_PRIORITY_CLASSES}


@dataclass(frozen=True, slots=True)
class WorkloadConfig:
    nodes: int
    jobs: int
    orgs: int
    seed: int = 0
    degraded_fraction: float = 0.01


def build_nodes(cfg: WorkloadConfig, rng: np.random.Generator) -> tuple[Node, ...]:
    """Half the nodes of each flavor (the first flavor gets the odd one), racked per flavor."""
    degraded = set(rng.choice(cfg.nodes, size=int(cfg.nodes * cfg.degraded_fraction), replace=False))
    counts = (cfg.nodes - cfg.nodes // 2, cfg.nodes // 2)
    nodes: list[Node] = []
    for flavor, count in zip(FLAVORS, counts, strict=True):
        for i in range(count):
            rack = i // RACK_NODES
            topology = TopologyPath(
                zone="zone-a",
                spine=f"{flavor.name}-spine-{rack // SPINE_RACKS}",
                rack=f"{flavor.name}-rack-{rack}",
            )
            health = Health.DEGRADED if len(nodes) in degraded else Health.HEALTHY
            nodes.append(
                Node(
                    name=f"{flavor.name}-n{i:05d}",
                    flavor=flavor.name,
                    accelerators=ACCELERATORS_PER_NODE,
                    cpu=NODE_CPU,
                    memory_gb=NODE_MEMORY_GB,
                    topology=topology,
                    health=health,
                )
            )
    return tuple(nodes)


def capacity_by_flavor(nodes: tuple[Node, ...]) -> dict[str, int]:
    cap = {f.name: 0 for f in FLAVORS}
    for node in nodes:
        cap[node.flavor] += node.accelerators
    return cap


def zipf_weights(n: int, s: float, rng: np.random.Generator) -> np.ndarray:
    """Zipf-like weights 1/rank^s, assigned to the n items in a random order."""
    weights = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** s
    return rng.permutation(weights)


def split_exactly(total: int, weights: np.ndarray) -> list[int]:
    """Integers proportional to ``weights`` that sum to ``total`` (largest remainder)."""
    if total == 0 or weights.sum() == 0:
        return [0] * len(weights)
    exact = weights / weights.sum() * total
    floors = np.floor(exact).astype(np.int64)
    by_remainder = np.argsort(-(exact - floors), kind="stable")
    floors[by_remainder[: total - int(floors.sum())]] += 1
    return [int(x) for x in floors]


def build_orgs(cfg: WorkloadConfig, cap: dict[str, int], rng: np.random.Generator) -> tuple[Org, ...]:
    weights = zipf_weights(cfg.orgs, QUOTA_ZIPF_S, rng)
    if cfg.orgs > 1:
        weights[ZERO_QUOTA_EVERY - 1 :: ZERO_QUOTA_EVERY] = 0.0
    nominal: dict[str, list[int]] = {}
    for flavor, total in cap.items():
        # Each flavor's split is jittered so that orgs lean towards one flavor or the other.
        nominal[flavor] = split_exactly(total, weights * rng.uniform(0.5, 1.5, size=cfg.orgs))
    return tuple(
        Org(
            name=f"org-{i:03d}",
            quotas={f: FlavorQuota(nominal=nominal[f][i]) for f in cap},
        )
        for i in range(cfg.orgs)
    )


def initial_usage(
    orgs: tuple[Org, ...], cap: dict[str, int], half_life_s: float, rng: np.random.Generator
) -> dict[str, dict[str, float]]:
    """Decayed usage as if each org had held up to 30% of a flavor for a long time."""
    horizon = half_life_s / math.log(2)
    return {o.name: {f: float(rng.uniform(0.0, 0.3)) * c * horizon for f, c in cap.items()} for o in orgs}


class JobFactory:
    """Makes pending jobs with increasing ids and submit times, from one random stream."""

    def __init__(self, orgs: tuple[Org, ...], rng: np.random.Generator) -> None:
        self._rng = rng
        self._org_names = [o.name for o in orgs]
        demand = zipf_weights(len(orgs), DEMAND_ZIPF_S, rng)
        self._org_probs = demand / demand.sum()
        self._next_id = 0
        self._gangs: dict[tuple[int, tuple[str, ...]], Gang] = {}

    def make(self, n: int, t_from: float, t_to: float) -> list[PendingJob]:
        """``n`` jobs submitted at increasing times within [t_from, t_to]."""
        rng = self._rng
        gpus = sample_gpu_counts(rng, n)
        org_idx = rng.choice(len(self._org_names), size=n, p=self._org_probs)
        flavor_draw = rng.random(n)
        prio_names = list(PRIORITY_SHARES)
        prio_idx = rng.choice(len(prio_names), size=n, p=list(PRIORITY_SHARES.values()))
        has_limit = rng.random(n) < MAX_RUNTIME_SHARE
        lo, hi = MAX_RUNTIME_RANGE_S
        limits = np.exp(rng.uniform(math.log(lo), math.log(hi), size=n))
        topo_draw = rng.random(n)
        submit = np.sort(rng.uniform(t_from, t_to, size=n))
        jobs = []
        for i in range(n):
            job_id = f"job-{self._next_id:07d}"
            self._next_id += 1
            priority = prio_names[prio_idx[i]]
            spec = JobSpec(
                name=job_id,
                org=self._org_names[org_idx[i]],
                priority=priority,
                gang=self._gang(int(gpus[i]), self._flavors(float(flavor_draw[i]))),
                topology=self._topology(int(gpus[i]), float(topo_draw[i])),
                max_runtime_seconds=float(limits[i]) if has_limit[i] else None,
            )
            jobs.append(
                PendingJob(
                    id=job_id,
                    spec=spec,
                    priority=_PRIORITY_VALUE[priority],
                    submitted_at=float(submit[i]),
                )
            )
        return jobs

    @staticmethod
    def _flavors(draw: float) -> tuple[str, ...]:
        a, b = FLAVORS[0].name, FLAVORS[1].name
        half = ONE_FLAVOR_SHARE / 2
        if draw < half:
            return (a,)
        if draw < ONE_FLAVOR_SHARE:
            return (b,)
        # Those accepting both split their preference order evenly.
        return (a, b) if draw < ONE_FLAVOR_SHARE + (1 - ONE_FLAVOR_SHARE) / 2 else (b, a)

    @staticmethod
    def _topology(gpus: int, draw: float) -> TopologyConstraint | None:
        if gpus <= ACCELERATORS_PER_NODE:
            return None
        if draw < RACK_REQUIRED_SHARE:
            return _REQUIRED_RACK
        if draw < RACK_REQUIRED_SHARE + RACK_PREFERRED_SHARE:
            return _PREFERRED_RACK
        return None

    def _gang(self, gpus: int, flavors: tuple[str, ...]) -> Gang:
        # Gangs are frozen values: sharing them keeps 100k jobs' memory down.
        key = (gpus, flavors)
        gang = self._gangs.get(key)
        if gang is None:
            gang = self._gangs[key] = gang_for(gpus, flavors)
        return gang
