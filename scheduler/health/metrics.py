"""The health model's Prometheus metrics, registered into the server's registry.

Names are part of the dashboards' contract (charts/): keep them. Label values are
bounded: node and rack names, three kinds, three states.
"""

from __future__ import annotations

import weakref

from prometheus_client import CollectorRegistry, Counter, Gauge

from scheduler.health.hysteresis import Level
from scheduler.health.model import Assessment
from values.domain import Health

KINDS = ("node", "rack", "link")

_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, HealthMetrics] = weakref.WeakKeyDictionary()


class HealthMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.node_state = Gauge(
            "trainpool_node_health_state",
            "The health model's state of each node (1 for the current state).",
            ["node", "state"],
            registry=r,
        )
        self.rack_loss = Gauge(
            "trainpool_rack_probe_loss_ratio",
            "Share of pingmesh probes lost on pairs touching the rack, over the evidence window.",
            ["rack"],
            registry=r,
        )
        self.rack_rtt = Gauge(
            "trainpool_rack_probe_rtt_seconds",
            "Median pingmesh RTT of pairs touching the rack, over the evidence window.",
            ["rack"],
            registry=r,
        )
        self.localized = Counter(
            "trainpool_localized_faults", "Faults localized from the mesh, by kind.", ["kind"], registry=r
        )
        self.jobs_moved = Counter(
            "trainpool_jobs_moved", "Running jobs moved off nodes, by reason.", ["org", "reason"], registry=r
        )
        self.stragglers_degraded = Counter(
            "trainpool_straggler_nodes_degraded",
            "Nodes degraded because a straggler verdict blamed them and their own evidence agreed.",
            registry=r,
        )
        self.heartbeat_age = Gauge(
            "trainpool_agent_last_heartbeat_seconds",
            "Seconds since each node's agent last reported.",
            ["node"],
            registry=r,
        )
        for kind in KINDS:
            self.localized.labels(kind)

    @classmethod
    def of(cls, registry: CollectorRegistry) -> HealthMetrics:
        """One per registry: a second app on the same server context reuses it."""
        found = _BY_REGISTRY.get(registry)
        if found is None:
            found = _BY_REGISTRY[registry] = cls(registry)
        return found

    def observe(self, a: Assessment) -> None:
        self.node_state.clear()
        for node, verdict in a.verdicts.items():
            for state in Health:
                self.node_state.labels(node, state.value).set(1 if verdict.state.health is state else 0)
        self.rack_loss.clear()
        self.rack_rtt.clear()
        for rack, summary in a.racks.items():
            self.rack_loss.labels(rack).set(summary.loss)
            if summary.rtt is not None:
                self.rack_rtt.labels(rack).set(summary.rtt)
        for f in a.new_faults:
            self.localized.labels(f.kind).inc()
        for t in a.transitions:
            if t.kind == "node" and t.old == Level.OK and t.new > Level.OK and "straggler" in t.evidence:
                self.stragglers_degraded.inc()
        self.heartbeat_age.clear()
        for node, age in a.heartbeat_age.items():
            if age != float("inf"):
                self.heartbeat_age.labels(node).set(age)
