"""The health model, pure: hysteresis, localization from the mesh, peer lists, and the
model over time fed with reports (scenarios: pool, faults in; verdicts out)."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from scheduler.health.hysteresis import Hysteresis, Level
from scheduler.health.localize import PairStat, localize
from scheduler.health.model import HealthModel
from scheduler.health.peers import Member, assign_peers
from scheduler.health.thresholds import Thresholds, ThresholdsError, load_thresholds
from values.reports import AgentReport, GpuStatus, ProbeResult

TH = Thresholds(min_probes=20, degrade_after_seconds=4, unhealthy_after_seconds=8, quiet_seconds=30)
# Three racks of two: the smallest pool where a rack fault is unambiguous.
RACKS = {"n1": "r1", "n2": "r1", "n3": "r2", "n4": "r2", "n5": "r3", "n6": "r3"}


def mesh(
    bad: dict[frozenset[str], float] | None = None, delay: dict[frozenset[str], float] | None = None
) -> list[PairStat]:
    """Every pair with 200 probes and 0.2 ms RTT; ``bad`` gives loss ratios, ``delay`` extra RTT."""
    out = []
    for a, b in itertools.combinations(sorted(RACKS), 2):
        key = frozenset((a, b))
        lost = round(200 * (bad or {}).get(key, 0.0))
        rtt = 0.0002 + (delay or {}).get(key, 0.0)
        out.append(PairStat(a, b, sent=200, lost=lost, rtt=rtt, baseline=0.0002))
    return out


def through(node: str, value: float) -> dict[frozenset[str], float]:
    return {frozenset((node, o)): value for o in RACKS if o != node}


def into_rack(rack: str, value: float) -> dict[frozenset[str], float]:
    inside = [n for n, r in RACKS.items() if r == rack]
    return {frozenset((a, b)): value for a in inside for b in RACKS if RACKS[b] != rack}


def kinds(findings: list) -> list[tuple[str, str, str]]:  # type: ignore[type-arg]
    return [(f.kind, f.subject, f.level.health.value) for f in findings]


# --- localization ------------------------------------------------------------------------


def test_a_quiet_mesh_blames_nothing() -> None:
    assert localize(mesh(), RACKS, TH) == []


def test_a_lossy_node_is_blamed_not_its_peers() -> None:
    assert kinds(localize(mesh(bad=through("n3", 0.05)), RACKS, TH)) == [("node", "n3", "degraded")]


def test_a_slow_node_is_blamed_by_rtt_over_its_baseline() -> None:
    found = localize(mesh(delay=through("n5", 0.020)), RACKS, TH)
    assert kinds(found) == [("node", "n5", "degraded")]
    assert found[0].rtt_excess == pytest.approx(0.020)


def test_heavy_loss_on_a_node_is_unhealthy() -> None:
    assert kinds(localize(mesh(bad=through("n1", 0.3)), RACKS, TH)) == [("node", "n1", "unhealthy")]


def test_loss_into_one_rack_blames_the_rack_not_its_nodes() -> None:
    found = localize(mesh(bad=into_rack("r2", 0.05)), RACKS, TH)
    assert kinds(found) == [("rack", "r2", "degraded")]
    assert found[0].members == ("n3", "n4")


def test_one_lossy_node_in_a_rack_is_a_node_fault_not_a_rack_fault() -> None:
    # Half of r1's crossing pairs are bad, all through n1: one node explains them.
    assert kinds(localize(mesh(bad=through("n1", 0.05)), RACKS, TH))[0][:2] == ("node", "n1")


def test_a_single_bad_pair_is_a_link() -> None:
    assert kinds(localize(mesh(bad={frozenset(("n2", "n5")): 0.1}), RACKS, TH)) == [
        ("link", "n2~n5", "degraded")
    ]


def test_a_node_fault_and_a_separate_link_fault_are_both_found() -> None:
    bad = through("n6", 0.05) | {frozenset(("n1", "n3")): 0.1}
    assert kinds(localize(mesh(bad=bad), RACKS, TH)) == [
        ("node", "n6", "degraded"),
        ("link", "n1~n3", "degraded"),
    ]


def test_a_whole_pool_gone_bad_is_not_pinned_on_one_rack() -> None:
    everything = {frozenset(p): 0.05 for p in itertools.combinations(RACKS, 2)}
    assert not [f for f in localize(mesh(bad=everything), RACKS, TH) if f.kind == "rack"]


def test_pairs_with_too_few_probes_say_nothing() -> None:
    few = [PairStat(p.a, p.b, sent=5, lost=5, rtt=p.rtt, baseline=p.baseline) for p in mesh()]
    assert localize(few, RACKS, TH) == []


# --- hysteresis ---------------------------------------------------------------------------


def run(h: Hysteresis, signals: list[tuple[float, Level]]) -> list[tuple[float, Level]]:
    """Feed (time, signal) pairs; return the (time, new state) of each change."""
    changes = []
    for t, s in signals:
        before = h.state
        after = h.step(s, t)
        if after != before:
            changes.append((t, after))
    return changes


def ticks(start: float, end: float, level: Level) -> list[tuple[float, Level]]:
    return [(float(t), level) for t in range(int(start), int(end))]


def test_a_level_must_hold_before_the_state_rises_and_falls_only_after_the_quiet_period() -> None:
    h = Hysteresis(degrade_after=4, unhealthy_after=8, quiet=30)
    changes = run(h, ticks(0, 10, Level.OK) + ticks(10, 20, Level.DEGRADED) + ticks(20, 80, Level.OK))
    assert changes == [(14.0, Level.DEGRADED), (49.0, Level.OK)]  # last signal at 19, +30 quiet


def test_a_flapping_link_keeps_the_node_degraded_instead_of_flapping_it() -> None:
    h = Hysteresis(degrade_after=4, unhealthy_after=8, quiet=30)
    flapping = [(float(t), Level.DEGRADED if (t // 5) % 2 == 0 else Level.OK) for t in range(0, 120)]
    changes = run(h, flapping)
    assert changes == [(4.0, Level.DEGRADED)]  # up once, never down while it flaps


def test_a_blip_shorter_than_the_rise_time_changes_nothing() -> None:
    h = Hysteresis(degrade_after=4, unhealthy_after=8, quiet=30)
    assert run(h, ticks(0, 3, Level.UNHEALTHY) + ticks(3, 60, Level.OK)) == []


def test_unhealthy_falls_to_degraded_while_degraded_is_still_seen() -> None:
    h = Hysteresis(degrade_after=0, unhealthy_after=2, quiet=10)
    signals = ticks(0, 5, Level.UNHEALTHY) + ticks(5, 30, Level.DEGRADED) + ticks(30, 60, Level.OK)
    assert run(h, signals) == [
        (0.0, Level.DEGRADED),
        (2.0, Level.UNHEALTHY),
        (14.0, Level.DEGRADED),
        (39.0, Level.OK),
    ]


# --- peer lists ----------------------------------------------------------------------------


def pool(racks: int, per_rack: int, spines: int = 2) -> list[Member]:
    return [Member(f"r{r}-n{i}", f"r{r}", f"s{r % spines}") for r in range(racks) for i in range(per_rack)]


def test_a_node_probes_all_rack_mates_and_a_bounded_sample_elsewhere() -> None:
    members = pool(racks=40, per_rack=8)
    peers = assign_peers("r3-n2", members, other_rack_peers=8, round_no=0)
    mates = {m.name for m in members if m.rack == "r3"} - {"r3-n2"}
    assert mates <= set(peers)
    assert len(peers) == len(mates) + 8
    assert len({p.split("-")[0] for p in peers if p not in mates}) == 8  # eight different racks


def test_probe_load_grows_linearly_with_the_pool() -> None:
    small = sum(len(assign_peers(m.name, pool(10, 8), 8, 0)) for m in pool(10, 8))
    large = sum(len(assign_peers(m.name, pool(100, 8), 8, 0)) for m in pool(100, 8))
    assert large == 10 * small  # per node: 7 mates + 8 others, whatever the size


def test_rotation_covers_every_other_rack_and_spreads_the_load() -> None:
    members = pool(racks=30, per_rack=4)
    seen = set()
    for rnd in range(10):
        seen |= {p.split("-")[0] for p in assign_peers("r0-n0", members, 8, rnd)}
    assert seen >= {f"r{r}" for r in range(1, 30)}
    load = Counter(p for m in members for p in assign_peers(m.name, members, 8, 0))
    assert max(load.values()) <= 3 * (sum(load.values()) / len(members))  # no hot spot


def test_a_small_pool_is_a_full_mesh() -> None:
    members = [Member(n, r) for n, r in RACKS.items()]
    assert assign_peers("n1", members, 8, 5) == ["n2", "n3", "n4", "n5", "n6"]
    assert assign_peers("unknown", members, 8, 0) == []


# --- the model over time ---------------------------------------------------------------------


class Pool:
    """Six agents reporting each second; ``loss``/``delay`` make pairs through a node bad."""

    def __init__(self, th: Thresholds) -> None:
        self.model = HealthModel(th)
        self.members = [Member(n, r) for n, r in RACKS.items()]
        self.seq = 0
        self.t = 0.0
        self.silent: set[str] = set()
        self.last_seen: dict[str, float] = {}

    def second(
        self,
        lossy: dict[str, float] | None = None,
        gpus: dict[str, GpuStatus] | None = None,
        nic_errors: dict[str, int] | None = None,
    ) -> None:
        self.t += 1
        self.seq += 1
        for node in RACKS:
            if node in self.silent:
                continue
            probes = []
            for peer in RACKS:
                if peer == node:
                    continue
                p = max((lossy or {}).get(node, 0.0), (lossy or {}).get(peer, 0.0))
                if peer in self.silent:
                    p = 1.0
                probes.append(ProbeResult(peer=peer, sent=10, lost=round(10 * p), rtt_median=0.0002))
            report = AgentReport(
                session="s", seq=self.seq, sent_at=self.t, interval=1, probes=probes,
                gpus=[gpus[node]] if gpus and node in gpus else [],
                nic={"eth0": {"rx_errors": nic_errors[node]}} if nic_errors and node in nic_errors else {},
            )  # fmt: skip
            self.model.ingest(node, report, self.t)
            self.last_seen[node] = self.t

    def states(self, stragglers: dict[str, str] | None = None) -> dict[str, str]:
        out = self.model.evaluate(self.t, self.members, self.last_seen, stragglers)
        self.last = out
        return {n: v.state.health.value for n, v in out.verdicts.items() if v.state != Level.OK}


TH_FAST = Thresholds(
    window_seconds=10, min_probes=20, degrade_after_seconds=4, unhealthy_after_seconds=8, quiet_seconds=20,
    suspect_after_seconds=5,
)  # fmt: skip


def test_a_lossy_node_degrades_with_hysteresis_and_recovers_after_the_quiet_period() -> None:
    pool_ = Pool(TH_FAST)
    history = []
    for t in range(80):
        pool_.second(lossy={"n3": 0.1} if 10 <= t < 30 else None)
        history.append(pool_.states())
    degraded_at = next(t for t, s in enumerate(history) if s)
    healthy_again = next(t for t, s in enumerate(history) if t > degraded_at and not s)
    assert all(s in ({}, {"n3": "degraded"}) for s in history)  # never a peer
    assert 10 + 4 <= degraded_at <= 10 + 8
    # The window still shows loss a few seconds after the fault ends; then 20 s of quiet.
    assert 30 + 20 <= healthy_again <= 30 + 10 + 20 + 1


def test_a_killed_agent_makes_its_node_suspect_without_blaming_its_peers() -> None:
    pool_ = Pool(TH_FAST)
    for _ in range(15):
        pool_.second()
        assert pool_.states() == {}
    pool_.silent.add("n4")
    seen = set()
    for _ in range(30):
        pool_.second()
        seen |= set(pool_.states().items())
    assert seen == {("n4", "degraded")}  # suspect, never unhealthy, peers untouched
    assert pool_.last.verdicts["n4"].reasons[0].startswith("suspect: no report")


def test_a_fatal_xid_makes_the_node_unhealthy() -> None:
    pool_ = Pool(TH_FAST)
    xid = GpuStatus(index=0, xid_errors=[79])
    states = []
    for t in range(20):
        pool_.second(gpus={"n2": xid} if t == 3 else None)
        states.append(pool_.states().get("n2"))
    assert "unhealthy" in states
    assert "GPU" in pool_.last.verdicts["n2"].reasons[0].upper()


def test_findings_are_counted_once_when_they_rise() -> None:
    pool_ = Pool(TH_FAST)
    new = []
    for t in range(40):
        pool_.second(lossy={"n1": 0.1} if t >= 5 else None)
        pool_.states()
        new += [(f.kind, f.subject) for f in pool_.last.new_faults]
    assert new == [("node", "n1")]


def test_thresholds_load_from_a_file_and_a_wrong_field_is_named(tmp_path) -> None:  # type: ignore[no-untyped-def]
    good = tmp_path / "h.yaml"
    good.write_text("quiet_seconds: 5\nloss_degraded: 0.01\n")
    assert load_thresholds(str(good)).quiet_seconds == 5
    bad = tmp_path / "bad.yaml"
    bad.write_text("quiet_secs: 5\n")
    with pytest.raises(ThresholdsError, match="quiet_secs"):
        load_thresholds(str(bad))
    neg = tmp_path / "neg.json"
    neg.write_text('{"loss_degraded": -1}')
    with pytest.raises(ThresholdsError, match="loss_degraded"):
        load_thresholds(str(neg))


def test_a_restored_state_stands_for_a_quiet_period_after_a_leader_change() -> None:
    model = HealthModel(TH_FAST)
    model.restore("n1", Level.UNHEALTHY, since=50.0, now=100.0)
    members = [Member(n, r) for n, r in RACKS.items()]
    states = []
    for t in range(100, 140):
        seen = dict.fromkeys(RACKS, float(t))
        states.append(model.evaluate(float(t), members, seen).verdicts["n1"].state)
    assert states[0] == Level.UNHEALTHY and states[19] == Level.UNHEALTHY  # no evidence yet: it stands
    assert states[-1] == Level.OK  # then the quiet period (20 s) passes


# --- straggler verdicts weighed against the node's own evidence ---------------------------

VERDICT = {"n3": "straggler: rank 1 on n3 steps 2.00x slower than its peers for 300s"}
HELD_DOWN = GpuStatus(index=0, utilization=100, sm_clock_mhz=990, max_sm_clock_mhz=1980,
                      clock_events=["hw_slowdown"])  # fmt: skip
POWER_CAPPED = GpuStatus(index=0, utilization=100, sm_clock_mhz=1755, max_sm_clock_mhz=1980,
                         clock_events=["sw_power_cap"])  # fmt: skip


def straggler_run(verdict: dict[str, str] | None, gpu: GpuStatus | None = None, nic_every: int = 0) -> Pool:
    """30 s of reports, n3's GPU as given and, with ``nic_every``, one NIC error on n3 each
    ``nic_every`` seconds (half the rate that degrades a node alone at 2)."""
    pool_ = Pool(TH_FAST)
    for t in range(30):
        nic = {"n3": 1} if nic_every and t % nic_every == 0 else None
        pool_.second(gpus={"n3": gpu} if gpu else None, nic_errors=nic)
        pool_.states(verdict)
    return pool_


@pytest.mark.parametrize(
    ("gpu", "nic_every", "evidence"),
    [(HELD_DOWN, 0, "gpu clocks held down (hw_slowdown)"), (None, 2, "nic: 0.50 errors/s")],
    ids=["gpu-clocks", "nic-errors"],
)
def test_a_straggler_verdict_with_the_nodes_own_evidence_degrades_it(
    gpu: GpuStatus | None, nic_every: int, evidence: str
) -> None:
    pool_ = straggler_run(VERDICT, gpu, nic_every)
    verdict = pool_.last.verdicts["n3"]
    assert pool_.states(VERDICT) == {"n3": "degraded"}  # and no other node
    assert verdict.reasons == [f"straggler on this node ({VERDICT['n3']}), and its own evidence: {evidence}"]
    assert verdict.evidence["straggler"] == {"verdict": VERDICT["n3"], "evidence": [evidence]}


@pytest.mark.parametrize(
    ("verdict", "gpu", "nic_every"),
    [(VERDICT, None, 0), (VERDICT, POWER_CAPPED, 0), (None, HELD_DOWN, 0), (None, None, 2)],
    ids=["verdict-alone", "verdict-and-a-power-cap", "held-down-clocks-alone", "few-nic-errors-alone"],
)
def test_a_straggler_verdict_or_weak_evidence_alone_leaves_the_node_healthy(
    verdict: dict[str, str] | None, gpu: GpuStatus | None, nic_every: int
) -> None:
    assert straggler_run(verdict, gpu, nic_every).states(verdict) == {}
