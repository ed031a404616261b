"""How a placed gang maps onto replicas: ranks, local ranks, device indices, the
environment each replica gets, and the names of its Ray objects. Pure: no Ray import.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

# Every Ray object of the pool lives in this namespace unless the server says otherwise.
NAMESPACE = "trainpool"
# Internal-KV keys of gang records (the backend's state that outlives a server).
KV_PREFIX = "gang:"


@dataclass(frozen=True)
class Replica:
    rank: int
    node: str  # pool node name
    local_rank: int  # index among the gang's replicas on the same node
    local_world_size: int
    node_rank: int  # index of the node among the gang's nodes, in rank order
    devices: tuple[int, ...]  # accelerator indices on its node


def replicas(
    assignments: tuple[tuple[str, int], ...] | list[tuple[str, int]],
    accelerators: int,
    busy: Mapping[str, set[int]] | None = None,
    capacity: Mapping[str, int] | None = None,
) -> list[Replica]:
    """Replicas in rank order. Device indices on a node: the lowest ones that no other
    live gang of this backend holds there (``busy``), ``accelerators`` per replica in
    local-rank order; where the node has too few left (``capacity``), plain local-rank
    order (replica l gets l*a .. l*a+a-1), which is what a node running only this gang
    gets anyway."""
    per_node: dict[str, int] = {}
    node_order: list[str] = []
    for node, count in assignments:
        if node not in per_node:
            node_order.append(node)
            per_node[node] = 0
        per_node[node] += count
    free: dict[str, list[int]] = {}
    for node, count in per_node.items():
        need = count * accelerators
        taken = (busy or {}).get(node, set())
        total = (capacity or {}).get(node, need + len(taken))
        candidates = [i for i in range(total) if i not in taken]
        free[node] = candidates if len(candidates) >= need else list(range(need))
    out: list[Replica] = []
    seen: dict[str, int] = {}
    for node, count in assignments:
        for _ in range(count):
            local = seen.get(node, 0)
            seen[node] = local + 1
            devices = tuple(free[node][local * accelerators : (local + 1) * accelerators])
            out.append(
                Replica(
                    rank=len(out),
                    node=node,
                    local_rank=local,
                    local_world_size=per_node[node],
                    node_rank=node_order.index(node),
                    devices=devices,
                )
            )
    return out


def replica_env(
    replica: Replica,
    world_size: int,
    spec_env: Mapping[str, str],
    pool_env: Mapping[str, str],
    visibility_env: str,
) -> dict[str, str]:
    """What the replica's process gets on top of its node's environment; MASTER_ADDR and
    MASTER_PORT are added on the node once rank 0 has picked them. The pool's variables
    win over the job's own."""
    env = {"PYTHONUNBUFFERED": "1", **spec_env, **pool_env}
    env.update(
        RANK=str(replica.rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(replica.local_rank),
        LOCAL_WORLD_SIZE=str(replica.local_world_size),
        NODE_RANK=str(replica.node_rank),
        TRAINPOOL_NODE=replica.node,
        TRAINPOOL_RANK=str(replica.rank),
    )
    env[visibility_env] = ",".join(str(d) for d in replica.devices)
    return env


def ignored_image(job_id: str, attempt: int, image: str | None) -> str | None:
    """The warning for a job spec's ``image``, which this backend cannot honour (a
    replica runs in its Ray worker's own environment): said at the job's first
    attempt only, so once per job however often it restarts."""
    if image is None or attempt != 0:
        return None
    return (
        f"job {job_id}: image '{image}' is ignored: the ray backend runs the command in the Ray "
        "workers' environment (only the kubernetes backend runs a job's image)"
    )


def placement_group_name(key: str) -> str:
    return f"tp:{key}"


def actor_name(key: str, rank: int) -> str:
    return f"tp:{key}:rank-{rank}"


def kv_key(key: str) -> bytes:
    return f"{KV_PREFIX}{key}".encode()


def loss_detection_seconds(environ: Mapping[str, str] | None = None) -> float:
    """About how long Ray's GCS takes to declare a silent node dead, from the same
    ``RAY_health_check_*`` settings the cluster runs with (Ray's defaults where unset):
    ``threshold`` missed checks, ``period`` apart, the last one waiting ``timeout``; plus a
    second for the loop to poll. 3 s with the local cluster's settings, 26 s with Ray's."""
    env = os.environ if environ is None else environ

    def ms(name: str, default: float) -> float:
        try:
            return float(env.get(f"RAY_health_check_{name}", default))
        except ValueError:
            return default

    return (ms("failure_threshold", 5) * ms("period_ms", 3000) + ms("timeout_ms", 10000)) / 1000 + 1.0
