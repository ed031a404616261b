"""The simulated pool: nodes, orgs and how trace jobs become gang specs.

A pool comes either from a pool config (``--pool pool.yaml``) or from a quota file: one
flavor, ``sum(quota nodes)`` nodes (or ``--nodes``) of ``--gpus-per-node`` accelerators,
``rack_size`` nodes per rack and ``racks_per_spine`` racks per spine. Every tenant of the
trace becomes an org; a tenant without a quota row gets nominal 0 (it may only borrow).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from scheduler.sim.trace import TraceError, TraceJob
from values.domain import Flavor, Gang, JobSpec, Node, TopologyPath
from values.names import NAME_PATTERN
from values.quotas import FlavorQuota, Org

DEFAULT_FLAVOR = "gpu"
_NAME = re.compile(NAME_PATTERN)


@dataclass(frozen=True)
class SimPool:
    flavor: str  # the flavor trace jobs ask for
    flavors: tuple[Flavor, ...]
    nodes: tuple[Node, ...]
    orgs: tuple[Org, ...]
    node_size: int  # accelerators per node of ``flavor``

    @property
    def capacity(self) -> int:
        return sum(n.accelerators for n in self.nodes if n.flavor == self.flavor)

    def nominal(self, org: str) -> int:
        for o in self.orgs:
            if o.name == org:
                return o.quota(self.flavor).nominal
        return 0


def grid_nodes(
    count: int, node_size: int, flavor: str = DEFAULT_FLAVOR, rack_size: int = 32, racks_per_spine: int = 8
) -> tuple[Node, ...]:
    """``count`` identical nodes, filled rack by rack and spine by spine."""
    if count < 1:
        raise TraceError(f"--nodes: the pool needs at least one node (got {count})")
    width = max(3, len(str(count - 1)))
    nodes = []
    for i in range(count):
        rack = i // rack_size
        spine = rack // racks_per_spine
        topo = TopologyPath(spine=f"spine-{spine}", rack=f"rack-{rack}")
        nodes.append(Node(name=f"n{i:0{width}d}", flavor=flavor, accelerators=node_size, topology=topo))
    return tuple(nodes)


def pool_from_quotas(
    quotas: Mapping[str, int],
    trace_orgs: Iterable[str],
    node_size: int = 8,
    nodes: int | None = None,
    rack_size: int = 32,
    racks_per_spine: int = 8,
) -> SimPool:
    """One flavor; org nominal = quota nodes x node size; nodes = sum of quotas unless given."""
    if node_size < 1:
        raise TraceError(f"--gpus-per-node: must be at least 1 (got {node_size})")
    count = nodes if nodes is not None else sum(quotas.values())
    names = list(dict.fromkeys([*quotas, *sorted(trace_orgs)]))
    orgs = tuple(
        Org(name=_org_name(o), quotas={DEFAULT_FLAVOR: FlavorQuota(nominal=quotas.get(o, 0) * node_size)})
        for o in names
    )
    return SimPool(
        flavor=DEFAULT_FLAVOR,
        flavors=(Flavor(name=DEFAULT_FLAVOR),),
        nodes=grid_nodes(count, node_size, DEFAULT_FLAVOR, rack_size, racks_per_spine),
        orgs=orgs,
        node_size=node_size,
    )


def pool_from_config(path: Path, trace_orgs: Iterable[str], flavor: str | None = None) -> SimPool:
    """A pool config file; trace tenants it does not name join with nominal 0."""
    from scheduler.config import load_pool_config

    config = load_pool_config(path)
    with_nodes = [f.name for f in config.flavors if any(n.flavor == f.name for n in config.all_nodes)]
    chosen = flavor or (with_nodes[0] if with_nodes else None)
    if chosen is None or chosen not in with_nodes:
        raise TraceError(f"--flavor: '{chosen}' is not a flavor with nodes in {path} (have: {with_nodes})")
    known = {o.name for o in config.orgs}
    extra = tuple(Org(name=_org_name(o)) for o in sorted(set(trace_orgs) - known))
    size = max(n.accelerators for n in config.all_nodes if n.flavor == chosen)
    return SimPool(
        flavor=chosen,
        flavors=config.flavors,
        nodes=config.all_nodes,
        orgs=(*config.orgs, *extra),
        node_size=size,
    )


def gang_shape(gpus: int, node_size: int) -> tuple[int, int]:
    """(replicas, accelerators per replica) for a job of ``gpus`` accelerators.

    Up to a node: one replica. Above: the fewest equal replicas that each fit on a node
    (16 on 8-GPU nodes: 2 x 8; 12: 2 x 6; 20: 4 x 5), so the job gets exactly the
    accelerators it asked for and multi-node jobs are gangs of (near-)full nodes.
    """
    if gpus <= node_size:
        return 1, gpus
    replicas = -(-gpus // node_size)
    while gpus % replicas:
        replicas += 1
    return replicas, gpus // replicas


def job_spec(job: TraceJob, pool: SimPool, max_runtime: float | None) -> JobSpec:
    replicas, per = gang_shape(job.gpus, pool.node_size)
    return JobSpec(
        name=_job_name(job.id),
        org=_org_name(job.org),
        gang=Gang(replicas=replicas, accelerators=per, flavors=(pool.flavor,)),
        max_runtime_seconds=max_runtime,
    )


def elastic(spec: JobSpec, job_id: str, fraction: float, seed: int) -> JobSpec:
    """``spec`` made elastic for a ``fraction`` of multi-replica jobs, picked by a hash of
    (seed, job id): its minimum is half its replicas, rounded up. The documented model:
    throughput is linear in size (k of n replicas progress at k/n, ``engine``), so its
    runtime limit, which holds for its whole run, is scaled for a run at its minimum."""
    g = spec.gang
    if g.replicas < 2:
        return spec
    digest = hashlib.blake2b(f"{seed}:elastic:{job_id}".encode(), digest_size=8).digest()
    if int.from_bytes(digest, "big") / 2**64 >= fraction:
        return spec
    least = (g.replicas + 1) // 2
    limit = spec.max_runtime_seconds
    return spec.model_copy(
        update={
            "gang": g.model_copy(update={"min_replicas": least}),
            "max_runtime_seconds": None if limit is None else min(limit * g.replicas / least, 365 * 86_400.0),
        }
    )


def assign_orgs(jobs: list[TraceJob], quotas: Mapping[str, int], seed: int) -> list[TraceJob]:
    """Give tenant-less jobs (format ``philly``) an org: a hash of (seed, job id) picks a tenant
    with probability proportional to its quota nodes. Deterministic and order-independent."""
    weighted = [(org, n) for org, n in quotas.items() if n > 0]
    total = sum(n for _, n in weighted)
    if total == 0:
        return jobs
    out = []
    for job in jobs:
        digest = hashlib.blake2b(f"{seed}:{job.id}".encode(), digest_size=8).digest()
        point = int.from_bytes(digest, "big") % total
        chosen = weighted[-1][0]
        for org, n in weighted:
            if point < n:
                chosen = org
                break
            point -= n
        out.append(TraceJob(job.id, chosen, job.submit, job.gpus, job.duration))
    return out


def _org_name(org: str) -> str:
    if not _NAME.match(org):
        raise TraceError(f"org '{org}': {NAME_PATTERN} is the rule for tenant names")
    return org


def _job_name(job_id: str) -> str:
    name = f"j{job_id.lower()}"
    if not _NAME.match(name):
        raise TraceError(f"job id '{job_id}': not usable as a job name (rule {NAME_PATTERN})")
    return name
