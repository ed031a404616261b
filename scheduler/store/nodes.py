"""Nodes: the backend's inventory merged with the operator's cordons."""

from __future__ import annotations

from collections.abc import Iterable

from sqlmodel import Session, col, select

from scheduler.store.keys import among
from scheduler.store.tables import AuditRow, NodeRow
from values.domain import Health, Node, TopologyPath


def sync_inventory(session: Session, inventory: Iterable[Node], now: float) -> list[str]:
    """Upsert what the backend reports; keep cordons (the API owns them); mark the
    nodes it no longer reports as absent (unhealthy to the core: nothing lands there).
    Returns the nodes that joined: new to a pool that had nodes already (a pool's first
    inventory is its bring-up, not a join)."""
    seen = set()
    existing = {n.name: n for n in session.exec(select(NodeRow)).all()}
    joined = [n.name for n in inventory if n.name not in existing] if existing else []
    for node in inventory:
        seen.add(node.name)
        row = existing.get(node.name) or NodeRow(name=node.name, flavor=node.flavor)
        fields = {
            "flavor": node.flavor,
            "accelerators": node.accelerators,
            "cpu": node.cpu,
            "memory_gb": node.memory_gb,
            "zone": node.topology.zone,
            "spine": node.topology.spine,
            "rack": node.topology.rack,
            "nvlink_domain": node.topology.nvlink_domain,
            "health": node.health.value,
            "present": True,
        }
        if any(getattr(row, k) != v for k, v in fields.items()) or row.name not in existing:
            for k, v in fields.items():
                setattr(row, k, v)
            row.updated_at = now
            row.version += 1
            session.add(row)
    for name, row in existing.items():
        if name not in seen and row.present:
            row.present = False
            row.updated_at = now
            row.version += 1
            session.add(row)
    return joined


_RANK = {Health.HEALTHY: 0, Health.DEGRADED: 1, Health.UNHEALTHY: 2}


def effective_health(row: NodeRow) -> Health:
    """The worse of what the backend and the node's agent say; absent nodes are unhealthy."""
    if not row.present:
        return Health.UNHEALTHY
    backend = Health(row.health)
    if row.reported_health is None:
        return backend
    return max(backend, Health(row.reported_health), key=_RANK.__getitem__)


def report_health(session: Session, row: NodeRow, health: Health, reason: str, now: float) -> NodeRow:
    row.reported_health = health.value
    row.reported_reason = reason
    row.reported_at = now
    row.updated_at = now
    row.version += 1
    session.add(row)
    return row


def to_node(row: NodeRow) -> Node:
    return Node(
        name=row.name,
        flavor=row.flavor,
        accelerators=row.accelerators,
        cpu=row.cpu,
        memory_gb=row.memory_gb,
        topology=TopologyPath(zone=row.zone, spine=row.spine, rack=row.rack, nvlink_domain=row.nvlink_domain),
        health=effective_health(row),
        cordoned=row.cordoned,
    )


def list_nodes(session: Session, flavor: str | None = None) -> list[NodeRow]:
    stmt = select(NodeRow).order_by(col(NodeRow.name))
    if flavor:
        stmt = stmt.where(NodeRow.flavor == flavor)
    return list(session.exec(stmt).all())


def get_node(session: Session, name: str) -> NodeRow | None:
    return session.get(NodeRow, name)


def set_cordon(session: Session, row: NodeRow, cordoned: bool, now: float) -> NodeRow:
    row.cordoned = cordoned
    row.updated_at = now
    row.version += 1
    session.add(row)
    return row


def request_validation(session: Session, row: NodeRow, why: str, now: float) -> NodeRow:
    """The node validates before it takes work: cordoned until the run passes. A run
    already pending or running goes on (asking twice is one validation)."""
    if row.validation not in ("pending", "running"):
        row.validation = "pending"
        row.validation_message = why
        row.validation_at = now
        row.validation_tries = 0
    row.cordoned = True
    row.updated_at = now
    row.version += 1
    session.add(row)
    return row


def validating(session: Session) -> list[NodeRow]:
    stmt = select(NodeRow).where(among(NodeRow.validation, ["pending", "running"]))
    stmt = stmt.order_by(col(NodeRow.name))
    return list(session.exec(stmt).all())


_CORDON_ACTIONS = ("node.cordon", "node.uncordon", "node.quarantined")


def quarantined(session: Session) -> list[str]:
    """Cordoned nodes whose last cordon came from quarantine, not from an operator."""
    cordoned = {r.name for r in session.exec(select(NodeRow).where(col(NodeRow.cordoned))).all()}
    if not cordoned:
        return []
    stmt = (
        select(AuditRow)
        .where(col(AuditRow.action).in_(_CORDON_ACTIONS), among(AuditRow.target, sorted(cordoned)))
        .order_by(col(AuditRow.id))
    )
    last = {r.target: r.action for r in session.exec(stmt).all()}  # later rows overwrite earlier
    return sorted(n for n, action in last.items() if action == "node.quarantined")
