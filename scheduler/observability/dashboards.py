"""The Grafana dashboards, built with grafana-foundation-sdk from typed panel specs.

Every query is a ``Query`` in a ``PanelSpec``; the real-Prometheus test runs each one
(``$__rate_interval`` and the template variables replaced by ``expand``) against a
server it scrapes. ``may_be_empty`` marks queries over events a short test may not
produce (a node degrading, a job moved).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["timeseries", "stat", "heatmap", "bargauge"]

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
DASHED_LINE = {"fill": "dash", "dash": [10, 10]}


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    may_be_empty: bool = False
    # Drawn as a dashed line: a threshold (nominal quota) that varies per series, so a
    # panel-wide fixed threshold cannot draw it.
    dashed: bool = False


@dataclass(frozen=True)
class PanelSpec:
    title: str
    kind: Kind
    queries: tuple[Query, ...]
    unit: str = "short"
    description: str = ""
    width: int = 12
    height: int = 8
    stacked: bool = False
    repeat: str = ""  # a variable's name: one copy of the panel per selected value


@dataclass(frozen=True)
class Variable:
    """A multi-select query variable; ``query`` is Grafana's ``label_values(selector, label)``."""

    name: str
    label: str
    query: str
    # What "All" sends: a regex that also matches values that appear after the
    # dashboard loaded (a new org), unlike the list of the values Grafana knew then.
    all_value: str = ".*"


@dataclass(frozen=True)
class DashboardSpec:
    uid: str
    title: str
    description: str
    rows: tuple[tuple[str, tuple[PanelSpec, ...]], ...]
    tags: tuple[str, ...] = field(default=("trainpool",))
    variables: tuple[Variable, ...] = ()

    @property
    def panels(self) -> list[PanelSpec]:
        return [p for _, panels in self.rows for p in panels]

    def all_values(self) -> dict[str, str]:
        return {v.name: v.all_value for v in self.variables}


def q(expr: str, legend: str = "", *, may_be_empty: bool = False, dashed: bool = False) -> Query:
    return Query(expr, legend, may_be_empty, dashed)


_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def expand(expr: str, values: Mapping[str, str], rate_interval: str = "30s") -> str:
    """``expr`` as Grafana sends it to Prometheus once each ``$name`` (or ``${name}``) has
    the value in ``values``; a variable without one raises KeyError."""
    given = {"__rate_interval": rate_interval, **values}
    return _VARIABLE.sub(lambda m: given[m.group(1) or m.group(2)], expr)


def quantile(p: float, histogram: str, by: str = "", matchers: str = "") -> str:
    """The p-quantile of a histogram's rate over the dashboard's rate interval."""
    labels = f"le, {by}" if by else "le"
    selector = f"{histogram}_bucket{{{matchers}}}" if matchers else f"{histogram}_bucket"
    return f"histogram_quantile({p}, sum by ({labels}) (rate({selector}[{RATE}])))"


POOL = DashboardSpec(
    "trainpool-pool",
    "trainpool / Pool overview",
    "Capacity, allocation by org and flavor, the queue and why it waits, the control loop.",
    (
        ("Capacity and allocation", (
            PanelSpec("Capacity by flavor and health", "timeseries", (
                q("sum by (flavor, health) (trainpool_capacity_accelerators)", "{{flavor}} {{health}}"),
            ), stacked=True),
            PanelSpec("Allocated accelerators by org and flavor", "timeseries", (
                q("sum by (org, flavor) (trainpool_running_accelerators)", "{{org}} {{flavor}}"),
            ), stacked=True),
            PanelSpec("Utilization", "stat", (
                q("sum(trainpool_running_accelerators) / sum(trainpool_capacity_accelerators)"),
            ), unit="percentunit", width=6),
            PanelSpec("Nodes by health", "bargauge", (
                q("sum by (health) (trainpool_nodes)", "{{health}}"),
            ), width=6),
            PanelSpec("Running jobs by org", "timeseries", (
                q("sum by (org) (trainpool_running_jobs)", "{{org}}"),
            )),
        )),
        ("Queue", (
            PanelSpec("Pending jobs by reason", "timeseries", (
                q("sum by (reason) (trainpool_pending_jobs_by_reason)", "{{reason}}"),
            ), stacked=True),
            PanelSpec("Pending accelerators by org and flavor", "timeseries", (
                q("sum by (org, flavor) (trainpool_pending_accelerators)", "{{org}} {{flavor}}"),
            ), stacked=True),
            PanelSpec("Submissions per minute by org", "timeseries", (
                q(f"sum by (org) (rate(trainpool_job_submissions_total[{RATE}])) * 60", "{{org}}"),
            )),
        )),
        ("Control loop", (
            PanelSpec("Cycle latency", "timeseries", (
                q(quantile(0.5, "trainpool_scheduling_cycle_seconds"), "p50"),
                q(quantile(0.99, "trainpool_scheduling_cycle_seconds"), "p99"),
            ), unit="s"),
            PanelSpec("Cycle p99 by phase", "timeseries", (
                q(quantile(0.99, "trainpool_scheduling_phase_seconds", "phase"), "{{phase}}"),
            ), unit="s"),
            PanelSpec("Cycles per second", "timeseries", (
                q(f"sum(rate(trainpool_scheduling_cycle_seconds_count[{RATE}]))", "cycles/s"),
            )),
            PanelSpec("Leader", "stat", (q("max(trainpool_leader)"),), width=6),
            PanelSpec("API p99 latency by route", "timeseries", (
                q(quantile(0.99, "trainpool_api_request_seconds", "route"), "{{route}}"),
            ), unit="s", width=18),
        )),
    ),
)  # fmt: skip

ORG = 'org=~"$org"'
ORG_FLAVOR = 'org=~"$org", flavor=~"$flavor"'


def quota(kind: str) -> str:
    """One kind of quota per org and flavor, filtered by the dashboard's variables."""
    return f'sum by (org, flavor) (trainpool_quota_accelerators{{kind="{kind}", {ORG_FLAVOR}}})'


# Per org and flavor, never summed over flavors: accelerators of different flavors are
# not interchangeable and each flavor's quota is its own.
USED = f"sum by (org, flavor) (trainpool_running_accelerators{{{ORG_FLAVOR}}})"
NOMINAL = quota("nominal")

ORGS = DashboardSpec(
    "trainpool-orgs",
    "trainpool / Organizations",
    "Usage of each flavor against the org's nominal quota of it, borrowing, fair share, "
    "and how long each org's jobs wait.",
    (
        ("Quota", (
            PanelSpec("Usage against nominal: $flavor", "timeseries", (
                # An org running nothing of a flavor has no running series: 0, not a gap,
                # is what lies under its nominal.
                q(f"{USED} or 0 * {NOMINAL}", "{{org}} {{flavor}} used"),
                q(NOMINAL, "{{org}} {{flavor}} nominal", dashed=True),
            ), repeat="flavor", description="Accelerators the org's running jobs hold; "
               "dashed: its nominal quota of the flavor."),
            PanelSpec("Borrowed and lent", "timeseries", (
                q(quota("borrowed"), "{{org}} {{flavor}} borrowed"),
                q(quota("lent"), "{{org}} {{flavor}} lent"),
            )),
            PanelSpec("Fair share (lower goes first)", "timeseries", (
                q(f"trainpool_fair_share{{{ORG}}}", "{{org}}"),
            ), description="The dominant share over all flavors (the metric has no flavor label)."),
            PanelSpec("Pending jobs by org and flavor", "timeseries", (
                q(f"sum by (org, flavor) (trainpool_pending_jobs{{{ORG_FLAVOR}}})", "{{org}} {{flavor}}"),
            ), stacked=True),
        )),
        ("Waiting", (
            PanelSpec("Wait time to start (p50, p90) by org", "timeseries", (
                q(quantile(0.5, "trainpool_job_wait_seconds", "org", ORG), "{{org}} p50", may_be_empty=True),
                q(quantile(0.9, "trainpool_job_wait_seconds", "org", ORG), "{{org}} p90", may_be_empty=True),
            ), unit="s", description="All flavors (the metric has no flavor label); empty while no job "
               "started in the window."),
            PanelSpec("Jobs started (total) by org", "timeseries", (
                q(f"sum by (org) (trainpool_job_wait_seconds_count{{{ORG}}})", "{{org}}"),
            ), description="All flavors (the metric has no flavor label)."),
        )),
    ),
    variables=(
        # From trainpool's own quota gauge: every org and flavor of the pool has a series,
        # also those with nothing running or pending.
        Variable("org", "Organization", "label_values(trainpool_quota_accelerators, org)"),
        Variable("flavor", "Flavor", f"label_values(trainpool_quota_accelerators{{{ORG}}}, flavor)"),
    ),
)  # fmt: skip

NETWORK = DashboardSpec(
    "trainpool-network",
    "trainpool / Network and node health",
    "Pingmesh loss and RTT per rack, node states from the health model, localized faults, agents.",
    (
        ("Racks", (
            PanelSpec("Probe loss by rack", "timeseries", (
                q("max by (rack) (trainpool_rack_probe_loss_ratio)", "{{rack}}"),
            ), unit="percentunit"),
            PanelSpec("Median probe RTT by rack", "timeseries", (
                q("max by (rack) (trainpool_rack_probe_rtt_seconds)", "{{rack}}"),
            ), unit="s"),
            PanelSpec("Probe RTT distribution (all agents)", "heatmap", (
                q(f"sum by (le) (rate(trainpool_agent_probe_rtt_seconds_bucket[{RATE}]))", "{{le}}"),
            ), unit="s"),
            PanelSpec("Probe loss seen by agents, by peer rack", "timeseries", (
                q("max by (peer_rack) (trainpool_agent_probe_loss_ratio)", "{{peer_rack}}"),
            ), unit="percentunit"),
        )),
        ("Nodes", (
            PanelSpec("Nodes by health state", "timeseries", (
                q("sum by (state) (trainpool_node_health_state)", "{{state}}"),
            ), stacked=True),
            PanelSpec("Quarantined nodes", "stat", (q("trainpool_nodes_quarantined"),), width=6),
            PanelSpec("Nodes degraded by straggler verdicts", "stat", (
                q("trainpool_straggler_nodes_degraded_total"),
            ), width=6, description="A rank on the node stepped slower than its gang's peers and the "
               "node's agent saw evidence too (clock slowdowns, ECC, link errors, probe loss)."),
            PanelSpec("Localized faults by kind (per hour)", "timeseries", (
                q(f"sum by (kind) (rate(trainpool_localized_faults_total[{RATE}])) * 3600", "{{kind}}"),
            ), width=6),
            PanelSpec("Seconds since each agent's last report", "timeseries", (
                q("trainpool_agent_last_heartbeat_seconds", "{{node}}"),
            ), unit="s"),
            PanelSpec("Jobs moved off nodes, by reason", "timeseries", (
                q(f"sum by (reason) (increase(trainpool_jobs_moved_total[{RATE}]))", "{{reason}}",
                  may_be_empty=True),
            ), description="Empty until a job has been moved off an unhealthy node."),
        )),
        ("Node hardware", (
            PanelSpec("NIC errors per second", "timeseries", (
                q(f"sum by (instance, interface, kind) (rate(trainpool_agent_nic_errors_total[{RATE}]))",
                  "{{instance}} {{interface}} {{kind}}", may_be_empty=True),
            ), description="Series appear once an interface reports an error counter."),
            PanelSpec("GPU XID errors", "timeseries", (
                q(f"sum by (instance) (increase(trainpool_agent_gpu_xid_errors_total[{RATE}]))",
                  "{{instance}}"),
            )),
            PanelSpec("GPU temperature", "timeseries", (
                q("max by (instance, gpu) (trainpool_agent_gpu_temperature_celsius)",
                  "{{instance}} gpu {{gpu}}", may_be_empty=True),
            ), unit="celsius", description="Empty on nodes without NVML (agent --no-gpu)."),
            PanelSpec("GPU SM clock (of its maximum)", "timeseries", (
                q("min by (instance, gpu) (trainpool_agent_gpu_sm_clock_ratio)",
                  "{{instance}} gpu {{gpu}}", may_be_empty=True),
            ), unit="percentunit", description="Empty on nodes without NVML (agent --no-gpu)."),
            PanelSpec("GPU clock slowdowns (node faults)", "timeseries", (
                q("sum by (instance, reason) (trainpool_agent_gpu_clock_slowdown) > 0",
                  "{{instance}} {{reason}}", may_be_empty=True),
            ), description="GPUs whose clock NVML holds down for a hardware, thermal or power-brake "
               "reason; empty while none is."),
        )),
    ),
)  # fmt: skip

RELIABILITY = DashboardSpec(
    "trainpool-reliability",
    "trainpool / Job reliability",
    "Restarts and preemptions by reason, lost work, time to recover, quarantines.",
    (
        ("Restarts and preemptions", (
            PanelSpec("Restarts per hour by failure class", "timeseries", (
                q(f"sum by (reason) (rate(trainpool_restarts_total[{RATE}])) * 3600", "{{reason}}"),
            )),
            PanelSpec("Preemptions per hour by reason", "timeseries", (
                q(f"sum by (reason) (rate(trainpool_preemptions_total[{RATE}])) * 3600", "{{reason}}"),
            )),
            PanelSpec("Restarts (total) by failure class", "bargauge", (
                q("sum by (reason) (trainpool_restarts_total)", "{{reason}}"),
            )),
            PanelSpec("Preemptions (total) by org", "bargauge", (
                q("sum by (org) (trainpool_preemptions_total)", "{{org}}"),
            )),
            PanelSpec("Elastic resizes per hour", "timeseries", (
                q(f"sum by (direction) (rate(trainpool_resizes_total[{RATE}])) * 3600", "{{direction}}"),
            ), description="Elastic gangs restarted smaller for a reclaim or a priority (shrink) or "
               "larger into idle room (grow)."),
            PanelSpec("Progress verdicts per hour", "timeseries", (
                q(f"sum by (verdict) (rate(trainpool_progress_verdicts_total[{RATE}])) * 3600",
                  "{{verdict}}"),
            ), description="Gangs whose ranks stopped stepping (hang: restarted from the checkpoint) or "
               "with a rank slower than its peers (straggler: its node blamed, the gang moved once that "
               "pays)."),
            PanelSpec("Node validations per hour", "timeseries", (
                q(f"sum by (result) (rate(trainpool_node_validations_total[{RATE}])) * 3600", "{{result}}"),
            ), description="Validation runs of joined, uncordoned or named nodes before they take work: "
               "passed (uncordoned), failed (quarantined), inconclusive (run again)."),
        )),
        ("Cost to running jobs", (
            PanelSpec("Effective training time ratio (24 h) by org", "timeseries", (
                q("max by (org) (trainpool_job_effective_time_ratio)", "{{org}}"),
            ), unit="percentunit", description="Of the accelerator time each org's jobs held in the last "
               "day, the share that went into work that was kept; `trainpool usage -o json` splits the rest "
               "by reason (startup, restart overhead, failure, hang, straggler, preemption)."),
            PanelSpec("Lost accelerator-hours per hour, by reason", "timeseries", (
                q(f"sum by (reason) (rate(trainpool_lost_accelerator_seconds_total[{RATE}]))", "{{reason}}"),
            ), description="Work since each interrupted gang's last checkpoint (all of it without one)."),
            PanelSpec("Lost accelerator-hours (total) by org", "bargauge", (
                q("sum by (org) (trainpool_lost_accelerator_seconds_total) / 3600", "{{org}}"),
            )),
            PanelSpec("Time to recover (p50, p90)", "timeseries", (
                q(quantile(0.5, "trainpool_recovery_seconds", "reason"), "{{reason}} p50", may_be_empty=True),
                q(quantile(0.9, "trainpool_recovery_seconds", "reason"), "{{reason}} p90", may_be_empty=True),
            ), unit="s", description="From a failure or preemption to running again; empty while none."),
        )),
        ("Nodes", (
            PanelSpec("Node quarantines (total)", "stat", (
                q("sum(trainpool_node_quarantines_total)"),
            ), width=6),
            PanelSpec("Infrastructure restarts in the last hour", "stat", (
                # "or vector(0)": a stat shows 0, not "No data", before the first such restart.
                q('sum(increase(trainpool_restarts_total{reason="infrastructure"}[1h])) or vector(0)'),
            ), width=6),
        )),
    ),
)  # fmt: skip

DASHBOARDS = (POOL, ORGS, NETWORK, RELIABILITY)


def build(spec: DashboardSpec) -> dict[str, Any]:
    """The dashboard's JSON model (what Grafana imports), via grafana-foundation-sdk."""
    from grafana_foundation_sdk.builders import bargauge, heatmap, prometheus, stat, timeseries
    from grafana_foundation_sdk.builders import common as common_b
    from grafana_foundation_sdk.builders import dashboard as dash
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models import common
    from grafana_foundation_sdk.models import dashboard as dm

    panel_kinds: dict[str, Any] = {
        "timeseries": timeseries.Panel,
        "stat": stat.Panel,
        "heatmap": heatmap.Panel,
        "bargauge": bargauge.Panel,
    }
    board = (
        dash.Dashboard(spec.title)
        .uid(spec.uid)
        .description(spec.description)
        .tags(list(spec.tags))
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
        .with_variable(dash.DatasourceVariable("datasource").label("Data source").type("prometheus"))
    )
    ds = dm.DataSourceRef(type_val=DATASOURCE["type"], uid=DATASOURCE["uid"])
    for v in spec.variables:
        board = board.with_variable(
            dash.QueryVariable(v.name)
            .label(v.label)
            .datasource(ds)
            .query(v.query)
            .multi(True)
            .include_all(True)
            .all_value(v.all_value)
            # Opens on every org and flavor.
            .current(dm.VariableOption(selected=True, text=["All"], value=["$__all"]))
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dm.VariableSort.ALPHABETICAL_ASC)
        )
    for row, panels in spec.rows:
        board = board.with_row(dash.Row(row))
        for p in panels:
            panel = (
                panel_kinds[p.kind]()
                .title(p.title)
                .datasource(ds)
                .unit(p.unit)
                .span(p.width)
                .height(p.height)
            )
            if p.description:
                panel = panel.description(p.description)
            if p.kind == "timeseries" and p.stacked:
                panel = panel.stacking(common_b.StackingConfig().mode(common.StackingMode.NORMAL))
            if p.kind == "heatmap":
                panel = panel.calculate(False)
            if p.repeat:
                panel = panel.repeat(p.repeat).repeat_direction("h")
            for i, query in enumerate(p.queries):
                ref_id = chr(ord("A") + i)
                target = prometheus.Dataquery().expr(query.expr).ref_id(ref_id).datasource(ds)
                if query.legend:
                    target = target.legend_format(query.legend)
                if p.kind == "heatmap":
                    target = target.format(prometheus_format_heatmap())
                panel = panel.with_target(target)
                if query.dashed:
                    panel = panel.override_by_query(ref_id, [dashed_line()])
            board = board.with_panel(panel)
    data: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    return data


def dashed_line() -> Any:
    from grafana_foundation_sdk.models import dashboard as dm

    return dm.DynamicConfigValue(id_val="custom.lineStyle", value=dict(DASHED_LINE))


def prometheus_format_heatmap() -> Any:
    from grafana_foundation_sdk.models import prometheus as pm

    return pm.PromQueryFormat.HEATMAP


def render_all() -> dict[str, str]:
    """File name -> JSON text, deterministic (sorted keys) so staleness is a byte compare."""
    return {
        f"{spec.uid}.json": json.dumps(build(spec), indent=2, sort_keys=True) + "\n" for spec in DASHBOARDS
    }
