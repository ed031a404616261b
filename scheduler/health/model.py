"""The health model: reports in, per-node states (with hysteresis), findings and events out.

Each evaluation builds one snapshot of the mesh (the last window of reports), localizes
the bad pairs (``localize``), turns findings and each node's own counters into a signal
level per node, and steps each node's hysteresis. Findings (node, rack, link) have their
own hysteresis too, so a localized fault is counted and announced once, when it rises.

A straggler verdict of the control loop (a rank slower than its gang's peers) blames its
node; the model degrades the node when its own evidence agrees (``_corroboration``: weaker
evidence than degrades a node alone, since the slow rank already points at it).

A node whose agent went silent is *suspect* (degraded): its pairs are left out of the
mesh, because its peers' failed probes cannot tell a dead agent (it also answers the
probes) from a dead node, and must not make the peers look bad either.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import median
from typing import Any

from scheduler.health.hysteresis import Hysteresis, Level
from scheduler.health.localize import Finding, PairStat, localize
from scheduler.health.mesh import Mesh, NodeSignals
from scheduler.health.peers import Member
from scheduler.health.thresholds import Thresholds
from values.reports import AgentReport


@dataclass(frozen=True)
class Transition:
    kind: str  # node | rack | link
    subject: str
    old: Level
    new: Level
    at: float
    message: str
    evidence: dict[str, Any]


@dataclass
class NodeVerdict:
    node: str
    state: Level
    since: float | None
    signal: Level
    reasons: list[str]
    evidence: dict[str, Any]


@dataclass(frozen=True)
class RackSummary:
    loss: float
    rtt: float | None
    pairs: int


@dataclass
class Assessment:
    verdicts: dict[str, NodeVerdict] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    new_faults: list[Finding] = field(default_factory=list)
    racks: dict[str, RackSummary] = field(default_factory=dict)
    heartbeat_age: dict[str, float] = field(default_factory=dict)


class HealthModel:
    def __init__(self, thresholds: Thresholds | None = None) -> None:
        self.th = thresholds or Thresholds()
        self.mesh = Mesh(window=self.th.window_seconds, baseline_window=self.th.baseline_seconds)
        self._nodes: dict[str, Hysteresis] = {}
        self._faults: dict[tuple[str, str], Hysteresis] = {}
        self._evidence: dict[str, tuple[list[str], dict[str, Any]]] = {}

    def _hysteresis(self) -> Hysteresis:
        th = self.th
        return Hysteresis(th.degrade_after_seconds, th.unhealthy_after_seconds, th.quiet_seconds)

    def ingest(self, node: str, report: AgentReport, at: float) -> None:
        self.mesh.add(node, report, at)

    def restore(self, node: str, state: Level, since: float | None, now: float) -> None:
        """Start from a state stored earlier (a new leader takes over the verdicts): it
        stands for a full quiet period from now, as if just signalled."""
        h = self._nodes.setdefault(node, self._hysteresis())
        h.restore(state, since, now)

    def evaluate(
        self,
        now: float,
        members: Sequence[Member],
        last_seen: Mapping[str, float],
        stragglers: Mapping[str, str] | None = None,
    ) -> Assessment:
        """``stragglers``: the nodes that straggler verdicts blamed lately, each with the
        verdict's message."""
        th = self.th
        stragglers = stragglers or {}
        self.mesh.prune(now)
        out = Assessment()
        names = {m.name for m in members}
        for gone in [n for n in self._nodes if n not in names]:
            del self._nodes[gone]
            self.mesh.forget(gone)
        ages = {m.name: now - last_seen[m.name] if m.name in last_seen else float("inf") for m in members}
        out.heartbeat_age = ages
        silent = {n for n, age in ages.items() if age > th.suspect_after_seconds}
        rack_of = {m.name: m.rack for m in members if m.name not in silent}
        pairs = [p for p in self.mesh.pairs(exclude=silent) if p.a in rack_of and p.b in rack_of]
        out.findings = localize(pairs, rack_of, th)
        out.racks = _rack_summaries(pairs, {m.name: m.rack for m in members})
        self._step_faults(out, now)
        for m in sorted(members, key=lambda m: m.name):
            blamed = stragglers.get(m.name)
            mine = [p for p in pairs if p.touches(m.name)] if blamed is not None else []  # rarely any
            age = ages.get(m.name)
            signal, reasons, evidence = self._signal(m.name, out.findings, silent, age, mine, blamed)
            h = self._nodes.setdefault(m.name, self._hysteresis())
            old = h.state
            new = h.step(signal, now)
            if signal > Level.OK:
                self._evidence[m.name] = (reasons, evidence)
            kept_reasons, kept = self._evidence.get(m.name, ([], {}))
            if new == Level.OK:
                self._evidence.pop(m.name, None)
                kept_reasons, kept = [], {}
            out.verdicts[m.name] = NodeVerdict(m.name, new, h.since, signal, kept_reasons, kept)
            if new != old:
                why = "; ".join(kept_reasons) if new > Level.OK else f"quiet for {th.quiet_seconds:g}s"
                message = f"{old.health.value} -> {new.health.value}: {why}"
                out.transitions.append(Transition("node", m.name, old, new, now, message, kept))
        return out

    def _signal(
        self,
        node: str,
        findings: Sequence[Finding],
        silent: set[str],
        age: float | None,
        pairs: Sequence[PairStat],
        straggler: str | None,
    ) -> tuple[Level, list[str], dict[str, Any]]:
        th = self.th
        if node in silent:
            shown = "never" if age is None or age == float("inf") else f"{age:.0f}s ago"
            reason = f"suspect: no report from its agent (last {shown})"
            return Level.DEGRADED, [reason], {"heartbeat_age_seconds": None if age == float("inf") else age}
        level = Level.OK
        reasons: list[str] = []
        blamed = []
        for f in findings:
            if f.kind in ("node", "rack") and node in f.members:
                level = max(level, f.level)
                blamed.append(f.evidence())
                reasons.append(
                    f"{f.kind} {f.subject}: loss {f.loss:.1%}, rtt +{f.rtt_excess * 1000:.1f} ms"
                    f" on {f.bad_pairs}/{f.pairs} pairs"
                )
        sig = self.mesh.signals(node)
        level, more = _counter_level(level, sig, th)
        reasons += more
        evidence: dict[str, Any] = {
            "findings": blamed,
            "counters": {
                "nic_errors_per_second": round(sig.nic_errors_per_second, 3),
                "ib_errors_per_second": round(sig.ib_errors_per_second, 3),
                "fatal_xids": list(sig.fatal_xids),
                "other_xids": list(sig.other_xids),
                "ecc_uncorrected": sig.ecc_uncorrected,
                "ecc_corrected": sig.ecc_corrected,
                "max_gpu_temperature": sig.max_temperature,
                "gpu_clock_slowdowns": list(sig.clock_slowdowns),
            },
        }
        if straggler is not None and level < Level.DEGRADED and (seen := _corroboration(sig, pairs, th)):
            level = Level.DEGRADED
            reasons.append(f"straggler on this node ({straggler}), and its own evidence: {'; '.join(seen)}")
            evidence["straggler"] = {"verdict": straggler, "evidence": seen}
        return level, reasons, evidence

    def _step_faults(self, out: Assessment, now: float) -> None:
        current = {(f.kind, f.subject): f for f in out.findings}
        for key in sorted(set(current) | set(self._faults)):
            h = self._faults.setdefault(key, self._hysteresis())
            f = current.get(key)
            old = h.state
            new = h.step(f.level if f is not None else Level.OK, now)
            if old == Level.OK and new > Level.OK and f is not None:
                out.new_faults.append(f)
            if new != old and key[0] != "node":  # node findings show as the node's own transition
                evidence = f.evidence() if f is not None else {}
                message = f"{key[0]} {key[1]}: {old.health.value} -> {new.health.value}"
                out.transitions.append(Transition(key[0], key[1], old, new, now, message, evidence))
            if new == Level.OK and f is None:
                del self._faults[key]


def _counter_level(level: Level, sig: NodeSignals, th: Thresholds) -> tuple[Level, list[str]]:
    reasons = []
    if sig.fatal_xids or sig.ecc_uncorrected:
        level = Level.UNHEALTHY
        reasons.append(f"gpu: fatal XID {list(sig.fatal_xids)} / uncorrected ECC {sig.ecc_uncorrected}")
    if sig.other_xids:
        level = max(level, Level.DEGRADED)
        reasons.append(f"gpu: XID {list(sig.other_xids)}")
    if sig.max_temperature is not None and sig.max_temperature >= th.gpu_temperature_celsius:
        level = max(level, Level.DEGRADED)
        reasons.append(f"gpu: {sig.max_temperature:.0f} C")
    if sig.nic_errors_per_second >= th.nic_errors_per_second:
        level = max(level, Level.DEGRADED)
        reasons.append(f"nic: {sig.nic_errors_per_second:.1f} errors/s")
    if sig.ib_errors_per_second >= th.ib_errors_per_second:
        level = max(level, Level.DEGRADED)
        reasons.append(f"infiniband: {sig.ib_errors_per_second:.1f} errors/s")
    return level, reasons


def _corroboration(sig: NodeSignals, pairs: Sequence[PairStat], th: Thresholds) -> list[str]:
    """What in a node's own window agrees with a straggler verdict on it: any GPU clock
    slowdown or corrected ECC, or errors, probe loss or RTT at
    ``straggler_evidence_share`` of the thresholds that degrade a node alone."""
    share = th.straggler_evidence_share
    seen = []
    if sig.clock_slowdowns:
        seen.append(f"gpu clocks held down ({', '.join(sig.clock_slowdowns)})")
    if sig.ecc_corrected:
        seen.append(f"gpu: {sig.ecc_corrected} corrected ECC errors")
    if sig.nic_errors_per_second >= share * th.nic_errors_per_second:
        seen.append(f"nic: {sig.nic_errors_per_second:.2f} errors/s")
    if sig.ib_errors_per_second >= share * th.ib_errors_per_second:
        seen.append(f"infiniband: {sig.ib_errors_per_second:.2f} errors/s")
    probed = [p for p in pairs if p.sent >= th.min_probes]
    sent = sum(p.sent for p in probed)
    if sent and (loss := sum(p.lost for p in probed) / sent) >= share * th.loss_degraded:
        seen.append(f"pingmesh: loss {loss:.1%} over its {len(probed)} pairs")
    excess = median(p.rtt_excess for p in probed) if probed else 0.0
    if excess >= share * th.rtt_degraded_seconds:
        seen.append(f"pingmesh: rtt +{excess * 1000:.1f} ms over its {len(probed)} pairs")
    return seen


def _rack_summaries(pairs: Sequence[Any], rack_of: Mapping[str, str]) -> dict[str, RackSummary]:
    touching: dict[str, list[Any]] = defaultdict(list)
    for p in pairs:
        for rack in {rack_of.get(p.a), rack_of.get(p.b)}:
            if rack is not None:
                touching[rack].append(p)
    out = {}
    for rack, ps in touching.items():
        sent = sum(p.sent for p in ps)
        rtts = [p.rtt for p in ps if p.rtt is not None]
        out[rack] = RackSummary(
            loss=sum(p.lost for p in ps) / sent if sent else 0.0,
            rtt=median(rtts) if rtts else None,
            pairs=len(ps),
        )
    return out
