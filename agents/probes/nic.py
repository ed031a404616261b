"""NIC counters from ``/sys/class/net/<interface>/statistics`` and ``carrier_changes``."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from agents.probes.counters import Counters, read_int

STATISTICS = (
    "rx_errors",
    "tx_errors",
    "rx_dropped",
    "tx_dropped",
    "rx_crc_errors",
    "rx_frame_errors",
    "rx_missed_errors",
    "rx_fifo_errors",
    "tx_fifo_errors",
    "tx_carrier_errors",
)


def read_nic_counters(root: Path = Path("/sys/class/net"), only: Collection[str] = ()) -> Counters:
    """Every interface but loopback (or only those named), each counter it exposes."""
    out: Counters = {}
    if not root.is_dir():
        return out
    for iface in sorted(p.name for p in root.iterdir()):
        if iface == "lo" or (only and iface not in only):
            continue
        counters = {}
        for name in STATISTICS:
            value = read_int(root / iface / "statistics" / name)
            if value is not None:
                counters[name] = value
        carrier = read_int(root / iface / "carrier_changes")
        if carrier is not None:
            counters["carrier_changes"] = carrier
        if counters:
            out[iface] = counters
    return out
