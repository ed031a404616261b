"""What an agent sends: one report per interval (it is also the heartbeat).

Counters are deltas since the agent's previous report, so the server never has to
guess about counter resets or agent restarts. Sizes are bounded: a report is a few
kilobytes even on a node with many peers and interfaces.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from values.names import Name
from values.strict import Count, Int, Number


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProbeResult(_In):
    peer: Name
    sent: Int = Field(ge=0, le=1_000_000)
    lost: Int = Field(ge=0, le=1_000_000)
    rtt_median: Number | None = Field(None, ge=0, le=60)  # seconds, of the probes answered


class GpuStatus(_In):
    index: Int = Field(ge=0, le=1024)
    temperature: Number | None = Field(None, ge=-50, le=200)
    utilization: Number | None = Field(None, ge=0, le=100)
    # New since the last report.
    xid_errors: list[Annotated[Int, Field(ge=0, le=1_000_000)]] = Field(default_factory=list, max_length=256)
    ecc_uncorrected: Count = 0  # new since the last report
    ecc_corrected: Count = 0
    sm_clock_mhz: Number | None = Field(None, ge=0, le=100_000)
    max_sm_clock_mhz: Number | None = Field(None, ge=0, le=100_000)
    # NVML's clock-event reasons active now, by name (``CLOCK_SLOWDOWNS`` and the benign ones).
    clock_events: list[Annotated[str, Field(max_length=32)]] = Field(default_factory=list, max_length=16)


class AgentReport(_In):
    session: str = Field(min_length=1, max_length=64)
    seq: Count
    sent_at: Number = Field(ge=0)
    interval: Number = Field(gt=0, le=3600)
    probes: list[ProbeResult] = Field(default_factory=list, max_length=4096)
    # interface -> counter -> delta (rx_errors, tx_errors, rx_dropped, tx_dropped, carrier_changes, ...)
    nic: dict[str, dict[str, Count]] = Field(default_factory=dict, max_length=256)
    # "device/port" -> counter -> delta (symbol_error, link_downed, port_rcv_errors, ...)
    infiniband: dict[str, dict[str, Count]] = Field(default_factory=dict, max_length=256)
    gpus: list[GpuStatus] = Field(default_factory=list, max_length=64)
    gpu_probe: str = Field("absent", max_length=200)  # "ok", or why there is none


class Registration(_In):
    node: Name
    address: str = Field(min_length=1, max_length=253)  # where peers reach its probe port
    probe_port: Int = Field(ge=1, le=65535)
    metrics_port: Int | None = Field(None, ge=1, le=65535)
    flavor: Name | None = None
    accelerators: Int = Field(0, ge=0, le=1024)
    zone: Name | None = None
    spine: Name | None = None
    rack: Name | None = None
    sent_at: Number = Field(ge=0)


# Counters whose increase means a sick link rather than a busy one (drops are left out:
# a full receive queue drops under load on a healthy NIC).
NIC_ERROR_COUNTERS = frozenset(
    {"rx_errors", "tx_errors", "rx_crc_errors", "rx_frame_errors", "tx_carrier_errors", "carrier_changes"}
)
IB_ERROR_COUNTERS = frozenset(
    {
        "symbol_error",
        "link_downed",
        "link_error_recovery",
        "port_rcv_errors",
        "local_link_integrity_errors",
        "excessive_buffer_overrun_errors",
        "port_rcv_remote_physical_errors",
    }
)
# NVIDIA's XIDs that mean the GPU (or its link) cannot be trusted with work: double-bit
# ECC (48), fell off the bus (79), NVLink error (74), row-remap failure (64), uncontained
# ECC (94/95), page-retirement failure (63 is a pending retirement: degraded), GSP (119/120).
XID_FATAL = frozenset({48, 64, 74, 79, 94, 95, 119, 120})

# NVML's clock-event (throttle) reasons that slow a GPU for a fault of the node (its
# cooling, its power delivery, a hardware slowdown signal) rather than for its workload:
# idle, application clocks, sync boost and the software power cap are left out.
CLOCK_SLOWDOWNS = frozenset(
    {"hw_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown", "sw_thermal_slowdown"}
)
