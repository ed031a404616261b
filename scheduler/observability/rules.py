"""The alert rules. Each alert says what is wrong in operator terms; thresholds are
the defaults an operator tunes (a copy of the generated file, or the PrometheusRule).

Tested by promtool: every alert has a unit test that makes it fire and one where it
stays quiet (tests/observability/).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# The server's scrape job (ServiceMonitor: the Service's name, "<release>-trainpool").
SERVER_UP = 'up{job=~".*trainpool.*", job!~".*agent.*"}'


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_: str
    severity: str  # page | warning | info
    summary: str
    description: str

    def rule(self) -> dict[str, Any]:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity},
            "annotations": {"summary": self.summary, "description": self.description},
        }


SCHEDULER = (
    Alert(
        "TrainpoolServerDown",
        f"{SERVER_UP} == 0",
        "2m",
        "page",
        "trainpool server {{ $labels.instance }} is down",
        "Prometheus cannot scrape the server: no scheduling, no API on this replica.",
    ),
    Alert(
        "TrainpoolNoLeader",
        "(max(trainpool_leader) or vector(0)) < 1",
        "2m",
        "page",
        "No trainpool server runs the control loop",
        "No replica holds the leader lease (or none is scraped): nothing is placed, restarted or stopped.",
    ),
    Alert(
        "TrainpoolLoopStalled",
        "max(trainpool_leader) == 1 and sum(increase(trainpool_scheduling_cycle_seconds_count[5m])) == 0",
        "5m",
        "page",
        "The trainpool control loop has not finished a cycle for 5 minutes",
        "A leader exists but its cycles do not complete (a hung backend or database).",
    ),
    Alert(
        "TrainpoolCycleSlow",
        "histogram_quantile(0.99, sum by (le) (rate(trainpool_scheduling_cycle_seconds_bucket[5m]))) > 5",
        "15m",
        "warning",
        "trainpool scheduling cycles are slow (p99 {{ $value | humanizeDuration }})",
        "Decisions and reactions to failures are delayed by the cycle time.",
    ),
)

QUOTAS = (
    Alert(
        "TrainpoolOrgBelowNominalWithPendingJobs",
        'sum by (org, flavor) (trainpool_quota_accelerators{kind="nominal"})'
        " - (sum by (org, flavor) (trainpool_running_accelerators)"
        ' or 0 * sum by (org, flavor) (trainpool_quota_accelerators{kind="nominal"})) > 0'
        " and on (org, flavor) sum by (org, flavor) (trainpool_pending_jobs) > 0",
        "30m",
        "warning",
        "Org {{ $labels.org }} runs below its {{ $labels.flavor }} guarantee while its jobs wait",
        "{{ $value }} nominal accelerators of the org are unused while it has pending jobs for 30 minutes:"
        " the guarantee is not being honoured (reclaim blocked, topology, unhealthy nodes, or jobs larger"
        " than the gap). Check `trainpool queue --org {{ $labels.org }}` for the pending reasons.",
    ),
    Alert(
        "TrainpoolLowUtilizationWithPendingJobs",
        "sum(trainpool_running_accelerators) / sum(trainpool_capacity_accelerators) < 0.5"
        " and sum(trainpool_pending_jobs) > 0",
        "30m",
        "warning",
        "Less than half of the pool is used while jobs are pending",
        "Utilization is {{ $value | humanizePercentage }} with a non-empty queue for 30 minutes:"
        " quotas, topology constraints or fragmentation keep jobs out.",
    ),
)

JOBS = (
    Alert(
        "TrainpoolJobsRestartingRepeatedly",
        'sum by (reason) (increase(trainpool_restarts_total{reason="job"}[30m])) > 10',
        "10m",
        "warning",
        "Jobs keep failing and restarting",
        "More than 10 restarts after the jobs' own failures in 30 minutes: a job in a restart loop"
        " (see `trainpool queue`: such jobs wait with reason backoff, and `trainpool describe`"
        " shows each failure).",
    ),
    Alert(
        "TrainpoolInfrastructureRestarts",
        'sum(increase(trainpool_restarts_total{reason="infrastructure"}[30m])) > 5',
        "5m",
        "warning",
        "Jobs are being restarted by infrastructure failures",
        "More than 5 gangs lost to node loss, eviction or backend errors in 30 minutes.",
    ),
)

NODES = (
    Alert(
        "TrainpoolNodeUnhealthy",
        'max by (node) (trainpool_node_health_state{state="unhealthy"}) == 1',
        "5m",
        "page",
        "Node {{ $labels.node }} is unhealthy",
        "The health model marks the node unhealthy; its jobs were moved and it gets no new work.",
    ),
    Alert(
        "TrainpoolNodeDegraded",
        'max by (node) (trainpool_node_health_state{state="degraded"}) == 1',
        "15m",
        "warning",
        "Node {{ $labels.node }} is degraded",
        "The node keeps single-node work but gets no new multi-node gangs.",
    ),
    Alert(
        "TrainpoolNodesQuarantined",
        "trainpool_nodes_quarantined > 0",
        "10m",
        "warning",
        "{{ $value }} nodes are quarantined",
        "Nodes cordoned after failing two different jobs; inspect and uncordon them (`trainpool nodes`).",
    ),
    Alert(
        "TrainpoolRackNetworkFault",
        "max by (rack) (trainpool_rack_probe_loss_ratio) > 0.02",
        "5m",
        "page",
        "Rack {{ $labels.rack }} loses {{ $value | humanizePercentage }} of pingmesh probes",
        "Probe loss on pairs touching the rack: a top-of-rack switch or uplink fault.",
    ),
    Alert(
        "TrainpoolLocalizedNetworkFaults",
        'sum by (kind) (increase(trainpool_localized_faults_total{kind=~"rack|link"}[15m])) > 0',
        "0m",
        "warning",
        "The health model localized a {{ $labels.kind }} network fault",
        "See the network health dashboard and `trainpool nodes describe` for the verdicts.",
    ),
    Alert(
        "TrainpoolAgentHeartbeatMissing",
        "trainpool_agent_last_heartbeat_seconds > 120",
        "2m",
        "warning",
        "The agent on {{ $labels.node }} has not reported for {{ $value | humanizeDuration }}",
        "Without reports the node's health is unknown; check the agent DaemonSet pod on the node.",
    ),
)

GROUPS = {
    "trainpool.scheduler": SCHEDULER,
    "trainpool.quotas": QUOTAS,
    "trainpool.jobs": JOBS,
    "trainpool.nodes": NODES,
}


def all_alerts() -> list[Alert]:
    return [a for alerts in GROUPS.values() for a in alerts]


def rules_document() -> dict[str, Any]:
    """The rule file (and the PrometheusRule's spec): {groups: [...]}."""
    return {
        "groups": [{"name": name, "rules": [a.rule() for a in alerts]} for name, alerts in GROUPS.items()]
    }
