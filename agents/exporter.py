"""The agent's own /metrics (prometheus_client, its own registry and HTTP server)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from agents.probes.counters import Counters
from values.reports import CLOCK_SLOWDOWNS, GpuStatus

RTT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 3.0)


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.rtt = Histogram(
            "trainpool_agent_probe_rtt_seconds", "Pingmesh RTT to peers, by the peer's rack.",
            ["peer_rack"], buckets=RTT_BUCKETS, registry=r,
        )  # fmt: skip
        self.loss = Gauge(
            "trainpool_agent_probe_loss_ratio",
            "Share of probes lost to peers of a rack, over the results of the last probe round.",
            ["peer_rack"],
            registry=r,
        )
        self.nic_errors = Counter(
            "trainpool_agent_nic_errors", "NIC error and drop counters, as seen growing by the agent.",
            ["interface", "kind"], registry=r,
        )  # fmt: skip
        self.ib_errors = Counter(
            "trainpool_agent_infiniband_errors", "InfiniBand port error counters, as seen growing.",
            ["port", "kind"], registry=r,
        )  # fmt: skip
        self.xids = Counter("trainpool_agent_gpu_xid_errors", "GPU XID events seen through NVML.", registry=r)
        self.temperature = Gauge(
            "trainpool_agent_gpu_temperature_celsius", "GPU temperature.", ["gpu"], registry=r
        )
        self.sm_clock = Gauge(
            "trainpool_agent_gpu_sm_clock_ratio", "GPU SM clock over its maximum.", ["gpu"], registry=r
        )
        self.slowdowns = Gauge(
            "trainpool_agent_gpu_clock_slowdown",
            "1 while NVML gives this node-fault reason for holding the GPU's clock down.",
            ["gpu", "reason"], registry=r,
        )  # fmt: skip
        self.reports = Counter(
            "trainpool_agent_reports", "Reports sent to the server, by result.", ["result"], registry=r
        )

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)

    def observe_probes(self, observed: list[tuple[str, float | None]], rack_of: dict[str, str]) -> None:
        sent: dict[str, int] = {}
        lost: dict[str, int] = {}
        for peer, rtt in observed:
            rack = rack_of.get(peer, "unknown")
            sent[rack] = sent.get(rack, 0) + 1
            if rtt is None:
                lost[rack] = lost.get(rack, 0) + 1
            else:
                self.rtt.labels(rack).observe(rtt)
        for rack, n in sent.items():
            self.loss.labels(rack).set(lost.get(rack, 0) / n)

    def observe_counters(self, nic: Counters, ib: Counters, gpus: list[GpuStatus]) -> None:
        for iface, counters in nic.items():
            for kind, d in counters.items():
                self.nic_errors.labels(iface, kind).inc(d)
        for port, counters in ib.items():
            for kind, d in counters.items():
                self.ib_errors.labels(port, kind).inc(d)
        for g in gpus:
            self.xids.inc(len(g.xid_errors))
            if g.temperature is not None:
                self.temperature.labels(str(g.index)).set(g.temperature)
            if g.sm_clock_mhz is not None and g.max_sm_clock_mhz:
                self.sm_clock.labels(str(g.index)).set(g.sm_clock_mhz / g.max_sm_clock_mhz)
            for reason in sorted(CLOCK_SLOWDOWNS):
                self.slowdowns.labels(str(g.index), reason).set(1 if reason in g.clock_events else 0)
