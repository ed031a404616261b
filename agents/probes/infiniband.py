"""InfiniBand/RoCE port counters from ``/sys/class/infiniband/<device>/ports/<n>/counters``."""

from __future__ import annotations

from pathlib import Path

from agents.probes.counters import Counters, read_int

# The error counters worth watching (the data counters are for throughput dashboards).
COUNTERS = (
    "symbol_error",
    "link_downed",
    "link_error_recovery",
    "port_rcv_errors",
    "port_rcv_remote_physical_errors",
    "port_xmit_discards",
    "local_link_integrity_errors",
    "excessive_buffer_overrun_errors",
)


def read_ib_counters(root: Path = Path("/sys/class/infiniband")) -> Counters:
    """``{"mlx5_0/1": {"symbol_error": 0, ...}}``; empty where there is no InfiniBand."""
    out: Counters = {}
    if not root.is_dir():
        return out
    for device in sorted(p for p in root.iterdir() if (p / "ports").is_dir()):
        for port in sorted((device / "ports").iterdir(), key=lambda p: p.name):
            counters = {}
            for name in COUNTERS:
                value = read_int(port / "counters" / name)
                if value is not None:
                    counters[name] = value
            if counters:
                out[f"{device.name}/{port.name}"] = counters
    return out


def port_state(root: Path, key: str) -> str | None:
    """ "ACTIVE", "DOWN", ... from ``ports/<n>/state`` ("4: ACTIVE")."""
    device, port = key.split("/", 1)
    try:
        text = (root / device / "ports" / port / "state").read_text().strip()
    except OSError:
        return None
    return text.split(":", 1)[-1].strip() or None
