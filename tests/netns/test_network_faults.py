"""Real faults on a real network: six hosts as namespaces in three racks behind a spine,
one agent in each, the server on the host side (see lab.py). Loss with iptables'
``statistic`` match, delay with an NFQUEUE program (no ``tc netem`` on this kernel).

Each test waits for a healthy pool, injects one fault, and measures the time from
injection to the verdict; the figures are printed and written to
``$TRAINPOOL_NETNS_FIGURES`` (a JSON file) when that is set (docs/HEALTH.md quotes them).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .lab import Lab, cleanup_all, exclusive, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Fast enough for a test, with the same proportions as the defaults (docs/HEALTH.md).
HEALTH = {
    "window_seconds": 6,
    "min_probes": 20,
    "probe_interval_seconds": 0.2,
    "report_interval_seconds": 1,
    "degrade_after_seconds": 2,
    "unhealthy_after_seconds": 4,
    "quiet_seconds": 8,
    "suspect_after_seconds": 3.5,
}
QUIET = float(os.environ.get("TRAINPOOL_NETNS_QUIET_SECONDS", "10"))
FIGURES: dict[str, float] = {}


def _can_run() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, iptables)"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    try:
        import netfilterqueue  # noqa: F401
    except ImportError:
        return "needs the netfilterqueue package"
    return None


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    reason = _can_run()
    if reason:
        pytest.skip(reason)
    with exclusive():
        yield from _lab(tmp_path_factory)


def _lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    cleanup_all()  # what a crashed earlier run left behind
    lab = Lab(tmp_path_factory.mktemp("netns"), health=HEALTH, port=free_port())
    try:
        lab.build()
        lab.start_server()
        for h in lab.hosts:
            lab.start_agent(h.name)
        agents = lambda: lab.api("GET", "/v1/agents")  # noqa: E731
        wait_for(
            lambda: len(agents()) == 6 and all(a["last_seq"] >= 3 for a in agents()), 60, "agents reporting"
        )
        yield lab
    finally:
        lab.teardown()
        out = os.environ.get("TRAINPOOL_NETNS_FIGURES")
        if out and FIGURES:
            Path(out).write_text(json.dumps(FIGURES, indent=2))
    assert not [line for line in os.popen("ip netns list").read().splitlines() if line.startswith(lab.prefix)]


def wait_for(cond: Callable[[], Any], timeout: float, what: str) -> float:
    """Seconds until ``cond()`` holds, polling every 0.25 s; fails after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if cond():
            return time.monotonic() - start
        time.sleep(0.25)
    raise AssertionError(f"not within {timeout:.0f}s: {what}")


def healthy(lab: Lab) -> int:
    """Wait for every node healthy; the id of the last event so far."""
    wait_for(lambda: set(lab.states().values()) == {"healthy"}, 60, "a healthy pool")
    return lab.last_event_id()


def node_events(lab: Lab, after: int) -> list[dict[str, Any]]:
    return [e for e in lab.events(after) if e["kind"] == "node"]


def figure(name: str, seconds: float) -> None:
    FIGURES[name] = round(seconds, 1)
    print(f"\n{name}: {seconds:.1f}s")


@pytest.mark.timeout(QUIET + 240)
def test_a_quiet_network_gives_no_verdict_at_all(lab: Lab) -> None:
    start = healthy(lab)
    time.sleep(QUIET)  # TRAINPOOL_NETNS_QUIET_SECONDS=300 for the five-minute run
    assert lab.events(start) == []
    assert set(lab.states().values()) == {"healthy"}


def test_five_percent_loss_on_a_node_degrades_that_node_only_and_it_recovers_after_the_quiet_period(
    lab: Lab,
) -> None:
    start = healthy(lab)
    lab.lossy_node("h-02", 0.05)
    try:
        took = wait_for(lambda: lab.states()["h-02"] == "degraded", 30, "h-02 degraded")
    finally:
        lab.flush(lab.host("h-02").ns)
    figure("node 5% loss -> degraded", took)
    assert {n: s for n, s in lab.states().items() if s != "healthy"} == {"h-02": "degraded"}
    cleared = time.monotonic()
    back = wait_for(lambda: lab.states()["h-02"] == "healthy", 60, "h-02 healthy again")
    figure("node fault removed -> healthy", back)
    assert back >= HEALTH["quiet_seconds"] - 1  # not before the quiet period
    assert time.monotonic() - cleared < HEALTH["quiet_seconds"] + HEALTH["window_seconds"] + 15
    nodes = node_events(lab, start)
    assert {e["subject"] for e in nodes} == {"h-02"}, nodes
    assert "node h-02" in nodes[0]["message"]


def test_twenty_ms_of_delay_on_a_node_degrades_that_node(lab: Lab) -> None:
    start = healthy(lab)
    proc = lab.delayed_node("h-04", 20)
    try:
        took = wait_for(lambda: lab.states()["h-04"] == "degraded", 30, "h-04 degraded by delay")
    finally:
        lab.flush(lab.host("h-04").ns)
        proc.terminate()
        proc.wait()
    figure("node +20 ms -> degraded", took)
    nodes = node_events(lab, start)
    assert {e["subject"] for e in nodes} == {"h-04"}
    assert "rtt +" in nodes[0]["message"]
    excess = nodes[0]["evidence"]["findings"][0]["rtt_excess_ms"]
    assert 15 <= excess <= 60, excess


def test_loss_into_one_rack_is_blamed_on_the_rack_not_on_its_nodes(lab: Lab) -> None:
    start = healthy(lab)
    rack = lab.rack_name(1)
    lab.lossy_rack(1, 0.05)
    try:
        took = wait_for(
            lambda: any(e["kind"] == "rack" and e["subject"] == rack for e in lab.events(start)),
            30,
            "rack fault",
        )
        wait_for(lambda: lab.states()["h-02"] == lab.states()["h-03"] == "degraded", 15, "the rack degraded")
    finally:
        lab.flush(lab.spine)
    figure("rack uplink 5% loss -> rack localized", took)
    states = lab.states()
    assert {n for n, s in states.items() if s != "healthy"} == {"h-02", "h-03"}
    nodes = node_events(lab, start)
    assert all(e["message"].split(": ", 1)[1].startswith(f"rack {rack}") for e in nodes), nodes
    assert not [e for e in lab.events(start) if e["kind"] == "node" and "node h-0" in e["message"]]


def test_one_bad_pair_is_a_link_and_no_node_is_blamed(lab: Lab) -> None:
    start = healthy(lab)
    lab.lossy_link("h-00", "h-05", 0.15)
    try:
        took = wait_for(
            lambda: any(e["kind"] == "link" and e["subject"] == "h-00~h-05" for e in lab.events(start)),
            30,
            "link",
        )
        time.sleep(HEALTH["unhealthy_after_seconds"])
    finally:
        lab.flush(lab.host("h-00").ns)
    figure("one pair 15% loss -> link localized", took)
    assert set(lab.states().values()) == {"healthy"}
    assert node_events(lab, start) == []


def test_a_killed_agent_makes_its_node_suspect_and_no_peer_is_blamed(lab: Lab) -> None:
    start = healthy(lab)
    lab.kill_agent("h-03")
    try:
        took = wait_for(lambda: lab.states()["h-03"] == "degraded", 20, "h-03 suspect")
        time.sleep(HEALTH["unhealthy_after_seconds"] + 2)
        assert lab.states()["h-03"] == "degraded"  # suspect, never unhealthy
        assert {n for n, s in lab.states().items() if s != "healthy"} == {"h-03"}
    finally:
        lab.start_agent("h-03")
    figure("agent killed -> node suspect", took)
    health = lab.api("GET", "/v1/agents/h-03/health")
    assert any("suspect" in r for r in health["verdict"]["reasons"])
    assert {e["subject"] for e in node_events(lab, start)} == {"h-03"}
