"""The agent's parsers on recorded samples (tests/agents/data/README.md says what each is)."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import pytest

from agents.pingmesh import PeerStats, parse_tcp_info
from agents.probes.counters import deltas
from agents.probes.gpu import NvmlProbe, gpu_status
from agents.probes.infiniband import port_state, read_ib_counters
from agents.probes.nic import read_nic_counters

DATA = Path(__file__).parent / "data"


def test_nic_counters_skip_loopback_and_their_growth_is_the_news() -> None:
    before = read_nic_counters(DATA / "sysfs_net_t0")
    after = read_nic_counters(DATA / "sysfs_net_t1")
    assert list(before) == ["eth0"]  # lo is never watched
    assert {"rx_errors", "tx_errors", "rx_crc_errors", "carrier_changes"} <= set(before["eth0"])
    assert "rx_bytes" not in before["eth0"]  # traffic is not health
    assert deltas(before, after) == {
        "eth0": {"rx_errors": 7, "rx_crc_errors": 5, "carrier_changes": 2, "tx_dropped": 3}
    }


def test_only_the_named_interfaces_are_read() -> None:
    assert read_nic_counters(DATA / "sysfs_net_t0", only=["eth9"]) == {}
    assert read_nic_counters(DATA / "no-such-dir") == {}


def test_a_counter_seen_first_has_no_delta_and_a_reset_counts_from_zero() -> None:
    assert deltas({}, {"eth0": {"rx_errors": 100}}) == {}  # history, not news
    assert deltas({"eth0": {"rx_errors": 100}}, {"eth0": {"rx_errors": 4}}) == {"eth0": {"rx_errors": 4}}
    assert deltas({"eth0": {"rx_errors": 4}}, {"eth0": {"rx_errors": 4}}) == {}


def test_infiniband_port_counters_and_state() -> None:
    before = read_ib_counters(DATA / "sysfs_ib_t0")
    after = read_ib_counters(DATA / "sysfs_ib_t1")
    assert sorted(before) == ["mlx5_0/1", "mlx5_1/1"]
    assert "port_rcv_data" not in before["mlx5_0/1"]  # throughput counters are left out
    assert deltas(before, after) == {"mlx5_1/1": {"symbol_error": 41, "link_downed": 1}}
    assert port_state(DATA / "sysfs_ib_t1", "mlx5_1/1") == "DOWN"
    assert port_state(DATA / "sysfs_ib_t1", "mlx5_0/1") == "ACTIVE"
    assert read_ib_counters(DATA / "no-such-dir") == {}


def test_gpu_readings_become_report_entries_with_ecc_deltas_and_xids() -> None:
    raw = json.loads((DATA / "nvml_readings.json").read_text())
    statuses = [gpu_status(a, b) for a, b in zip(raw["after"], raw["before"], strict=True)]
    assert [(g.index, g.temperature, g.ecc_uncorrected, g.ecc_corrected) for g in statuses] == [
        (0, 42, 0, 3),
        (1, 44, 2, 0),
        (2, 93, 0, 0),  # no ECC on this one: nothing to count
    ]
    assert [g.xid_errors for g in statuses] == [[], [48], [13]]
    # Power-capped under load, idle, and held at half clock by a hardware and a thermal slowdown.
    assert [(g.sm_clock_mhz, g.clock_events) for g in statuses] == [
        (1755, ["sw_power_cap"]),
        (345, ["gpu_idle"]),
        (990, ["hw_slowdown", "hw_thermal_slowdown"]),
    ]
    assert statuses[0].max_sm_clock_mhz == 1980 and gpu_status(raw["before"][0], None).clock_events == []
    assert gpu_status(raw["after"][1], None).ecc_uncorrected == 0  # a first reading has no delta


def test_without_a_gpu_driver_the_probe_says_so_once_and_stays_quiet(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="agents.probes.gpu"):
        probe = NvmlProbe()
        if probe.absent is None:
            pytest.skip("this machine has a GPU and NVML; the absent path is not reachable")
        for _ in range(5):
            assert probe.read() == []
    assert probe.status.startswith("no NVML")
    assert len([r for r in caplog.records if "GPU probe off" in r.getMessage()]) == 1
    assert NvmlProbe(enabled=False).status == "disabled by --gpu off"


def test_tcp_info_gives_the_kernels_rtt_and_retransmissions() -> None:
    retrans, rtt = parse_tcp_info((DATA / "tcp_info_loopback.bin").read_bytes())
    assert retrans == 0 and 0 < rtt < 0.01
    retrans, _ = parse_tcp_info((DATA / "tcp_info_syn_retransmitted.bin").read_bytes())
    assert retrans == 1  # the first SYN was dropped: the probe counts as lost
    with pytest.raises(ValueError, match="tcp_info"):
        parse_tcp_info(b"\x00" * 20)


def test_tcp_info_of_a_live_connection_parses() -> None:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        with socket.create_connection(srv.getsockname()) as c:
            retrans, rtt = parse_tcp_info(c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104))
    assert retrans == 0 and rtt < 0.05


def test_probe_results_are_summarised_per_peer_and_reset() -> None:
    stats = PeerStats()
    for rtt in (0.001, 0.003, 0.002):
        stats.ok("b", rtt)
    stats.loss("b")
    stats.loss("c")
    first = stats.drain()
    assert [(p.peer, p.sent, p.lost, p.rtt_median) for p in first] == [("b", 4, 1, 0.002), ("c", 1, 1, None)]
    assert stats.drain() == []
