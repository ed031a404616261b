"""Ray node labels <-> pool nodes. Pure: no Ray import.

A Ray node is a pool node when it carries the flavor label; the others (the head
node, nodes of other tenants) are ignored. The Ray node id stays internal to the
backend: the pool knows nodes by the name in ``trainpool.io/node``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from values.domain import Health, Node, TopologyPath

PREFIX = "trainpool.io/"
NODE = PREFIX + "node"
FLAVOR = PREFIX + "flavor"
ACCELERATORS = PREFIX + "accelerators"
ZONE = PREFIX + "zone"
SPINE = PREFIX + "spine"
RACK = PREFIX + "rack"
NVLINK_DOMAIN = PREFIX + "nvlink-domain"
CPU = PREFIX + "cpu"
MEMORY_GB = PREFIX + "memory-gb"

# Ray's own label: the bundles of a gang are pinned to nodes by it.
RAY_NODE_ID = "ray.io/node-id"


def accel_resource(flavor: str) -> str:
    """The custom resource a node declares for its accelerators (``accel-h100: 8``):
    placement groups reserve it, so Ray itself refuses to overcommit a node."""
    return f"accel-{flavor}"


def labels_for(node: Node) -> dict[str, str]:
    """The labels a Ray node must carry to be ``node`` in the pool."""
    labels = {
        NODE: node.name,
        FLAVOR: node.flavor,
        ACCELERATORS: str(node.accelerators),
        ZONE: node.topology.zone,
        SPINE: node.topology.spine,
        RACK: node.topology.rack,
        CPU: f"{node.cpu:g}",
        MEMORY_GB: f"{node.memory_gb:g}",
    }
    if node.topology.nvlink_domain is not None:
        labels[NVLINK_DOMAIN] = node.topology.nvlink_domain
    return labels


@dataclass(frozen=True)
class RayNode:
    """One pool node as Ray sees it."""

    node: Node
    node_id: str
    ip: str
    alive: bool


def pool_node(record: Mapping[str, Any], defaults: Mapping[str, Node] | None = None) -> RayNode | None:
    """A ``ray.nodes()`` record as a pool node; None if it is not one (no flavor label,
    or labels that do not make a valid node, which the caller may log).

    ``defaults`` are the pool config's nodes by name: CPU and memory come from there
    when the labels do not say."""
    labels: Mapping[str, str] = record.get("Labels") or {}
    flavor = labels.get(FLAVOR)
    if not flavor:
        return None
    node_id = str(record.get("NodeID", ""))
    name = labels.get(NODE) or f"ray-{node_id[:12]}"
    known = (defaults or {}).get(name)
    resources: Mapping[str, float] = record.get("Resources") or {}
    accelerators = _int(labels.get(ACCELERATORS))
    if accelerators is None:
        accelerators = int(resources.get(accel_resource(flavor), 0))
    alive = bool(record.get("Alive"))
    try:
        node = Node(
            name=name,
            flavor=flavor,
            accelerators=accelerators,
            cpu=_float(labels.get(CPU)) or (known.cpu if known else 64.0),
            memory_gb=_float(labels.get(MEMORY_GB)) or (known.memory_gb if known else 512.0),
            topology=TopologyPath(
                zone=labels.get(ZONE, "zone-a"),
                spine=labels.get(SPINE, "spine-0"),
                rack=labels.get(RACK, "rack-0"),
                nvlink_domain=labels.get(NVLINK_DOMAIN),
            ),
            health=Health.HEALTHY if alive else Health.UNHEALTHY,
        )
    except ValidationError:
        return None
    return RayNode(node=node, node_id=node_id, ip=str(record.get("NodeManagerAddress", "")), alive=alive)


def pool_nodes(
    records: Iterable[Mapping[str, Any]], defaults: Mapping[str, Node] | None = None
) -> list[RayNode]:
    """One entry per pool node name. A node that died and came back under the same
    name has two records; the live one wins (else the newest dead one)."""
    chosen: dict[str, RayNode] = {}
    for record in records:
        rn = pool_node(record, defaults)
        if rn is None:
            continue
        old = chosen.get(rn.node.name)
        if old is None or rn.alive or not old.alive:
            chosen[rn.node.name] = rn
    return sorted(chosen.values(), key=lambda r: r.node.name)


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None
