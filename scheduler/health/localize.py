"""Where a fault is, from one snapshot of the mesh: a node (its NIC), a rack (its switch
or uplink), or a single link. Pure: pairs and topology in, findings out.

Rules, applied in this order, each explaining the bad pairs it covers so the next rule
sees only what is left (a greedy explanation, largest first):

1. Rack: most pairs crossing into the rack are bad, the bad ones run through at least
   two of its nodes (and most of them), and pairs that do not touch the rack are mostly
   fine. A sick uplink makes every node of the rack look bad to the rest of the pool;
   blaming the nodes one by one would be wrong.
2. Node: most of a node's remaining pairs are bad, and at least ``min_bad_pairs`` are.
   Its peers then keep one bad pair each (the one with it), which is explained already.
3. Link: any bad pair still unexplained.

With two racks the crossing pairs of one are exactly the crossing pairs of the other;
the mesh cannot tell which uplink (or the spine) is sick. The rack whose own pairs are
worse is blamed first; a pool needs three racks for the rule to be unambiguous.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import median

from scheduler.health.hysteresis import Level
from scheduler.health.thresholds import Thresholds


@dataclass(frozen=True)
class PairStat:
    """Both directions of one pair over the evidence window."""

    a: str
    b: str
    sent: int
    lost: int
    rtt: float | None = None  # seconds, median of the window
    baseline: float | None = None  # seconds, the pair's own floor

    @property
    def loss(self) -> float:
        return self.lost / self.sent if self.sent else 0.0

    @property
    def rtt_excess(self) -> float:
        if self.rtt is None or self.baseline is None:
            return 0.0
        return max(0.0, self.rtt - self.baseline)

    @property
    def key(self) -> tuple[str, str]:
        return (self.a, self.b) if self.a <= self.b else (self.b, self.a)

    def touches(self, node: str) -> bool:
        return node in (self.a, self.b)


@dataclass(frozen=True)
class Finding:
    kind: str  # node | rack | link
    subject: str  # node name, rack name, or "a~b"
    level: Level
    loss: float
    rtt_excess: float
    bad_pairs: int
    pairs: int
    members: tuple[str, ...] = ()  # the nodes it covers
    worst: tuple[tuple[str, str, float, float], ...] = field(default=(), compare=False)

    def evidence(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "subject": self.subject,
            "level": self.level.health.value,
            "loss": round(self.loss, 4),
            "rtt_excess_ms": round(self.rtt_excess * 1000, 2),
            "bad_pairs": self.bad_pairs,
            "pairs": self.pairs,
            "worst_pairs": [
                {"a": a, "b": b, "loss": round(loss, 4), "rtt_excess_ms": round(ex * 1000, 2)}
                for a, b, loss, ex in self.worst
            ],
        }


def judge(pair: PairStat, th: Thresholds) -> Level | None:
    """One pair's level, or None while it has too few probes to say."""
    if pair.sent < th.min_probes:
        return None
    loss, excess = pair.loss, pair.rtt_excess
    if loss >= th.loss_unhealthy or excess >= th.rtt_unhealthy_seconds:
        return Level.UNHEALTHY
    if loss >= th.loss_degraded or excess >= th.rtt_degraded_seconds:
        return Level.DEGRADED
    return Level.OK


def localize(pairs: Iterable[PairStat], rack_of: Mapping[str, str], th: Thresholds) -> list[Finding]:
    judged: dict[tuple[str, str], tuple[PairStat, bool]] = {}
    for p in pairs:
        level = judge(p, th)
        if level is not None:
            judged[p.key] = (p, level >= Level.DEGRADED)
    explained: set[tuple[str, str]] = set()
    findings = _racks(judged, rack_of, th, explained)
    findings += _nodes(judged, th, explained)
    for key, (p, bad) in sorted(judged.items()):
        if bad and key not in explained:
            findings.append(_finding("link", f"{key[0]}~{key[1]}", [p], 1, key, th))
    return findings


def _racks(
    judged: Mapping[tuple[str, str], tuple[PairStat, bool]],
    rack_of: Mapping[str, str],
    th: Thresholds,
    explained: set[tuple[str, str]],
) -> list[Finding]:
    members: dict[str, set[str]] = defaultdict(set)
    for node, rack in rack_of.items():
        members[rack].add(node)
    candidates = []
    for rack, nodes in members.items():
        crossing = [(p, bad) for p, bad in judged.values() if (p.a in nodes) != (p.b in nodes)]
        outside = [bad for p, bad in judged.values() if p.a not in nodes and p.b not in nodes]
        inside = [bad for p, bad in judged.values() if p.a in nodes and p.b in nodes]
        bad_cross = [p for p, bad in crossing if bad]
        if len(bad_cross) < th.min_bad_pairs or len(bad_cross) < th.majority * len(crossing):
            continue
        if outside and sum(outside) >= th.majority * len(outside):
            continue  # the whole pool is bad, not this rack
        per_node = _bad_share(crossing, nodes)
        blamed = [n for n, (bad, total) in per_node.items() if total and bad >= th.majority * total]
        if len(blamed) < 2 or len(blamed) < th.majority * len(per_node):
            continue  # one node explains it: rule 2
        share = len(bad_cross) / len(crossing)
        inside_share = sum(inside) / len(inside) if inside else 0.0
        candidates.append((share, inside_share, rack, nodes, crossing))
    out = []
    for _share, _inside, rack, nodes, crossing in sorted(candidates, key=lambda c: (-c[0], -c[1], c[2])):
        left = [p for p, _ in crossing if p.key not in explained]
        bad_left = [p for p in left if judged[p.key][1]]
        if len(bad_left) < th.min_bad_pairs or len(bad_left) < th.majority * len(left):
            continue
        out.append(_finding("rack", rack, bad_left, len(left), tuple(sorted(nodes)), th))
        explained.update(p.key for p in left)
    return out


def _bad_share(crossing: Sequence[tuple[PairStat, bool]], nodes: set[str]) -> dict[str, tuple[int, int]]:
    share: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for p, bad in crossing:
        inner = p.a if p.a in nodes else p.b
        share[inner][0] += int(bad)
        share[inner][1] += 1
    return {n: (v[0], v[1]) for n, v in share.items()}


def _nodes(
    judged: Mapping[tuple[str, str], tuple[PairStat, bool]], th: Thresholds, explained: set[tuple[str, str]]
) -> list[Finding]:
    out: list[Finding] = []
    while True:
        by_node: dict[str, list[tuple[PairStat, bool]]] = defaultdict(list)
        for key, (p, bad) in judged.items():
            if key not in explained:
                by_node[p.a].append((p, bad))
                by_node[p.b].append((p, bad))
        best: tuple[str, list[PairStat], int] | None = None
        for name in sorted(by_node):
            mine = by_node[name]
            bad_pairs = [p for p, b in mine if b]
            enough = len(bad_pairs) >= th.min_bad_pairs and len(bad_pairs) >= th.majority * len(mine)
            if enough and (best is None or len(bad_pairs) > len(best[1])):
                best = (name, bad_pairs, len(mine))
        if best is None:
            return out
        out.append(_finding("node", best[0], best[1], best[2], (best[0],), th))
        explained.update(p.key for p, _ in by_node[best[0]])


def _finding(
    kind: str, subject: str, bad: Sequence[PairStat], total: int, members: tuple[str, ...], th: Thresholds
) -> Finding:
    sent = sum(p.sent for p in bad)
    loss = sum(p.lost for p in bad) / sent if sent else 0.0
    excess = median(p.rtt_excess for p in bad) if bad else 0.0
    level = (
        Level.UNHEALTHY
        if (loss >= th.loss_unhealthy or excess >= th.rtt_unhealthy_seconds)
        else Level.DEGRADED
    )
    worst = sorted(bad, key=lambda p: (-p.loss, -p.rtt_excess, p.key))[:8]
    return Finding(
        kind=kind, subject=subject, level=level, loss=loss, rtt_excess=excess, bad_pairs=len(bad),
        pairs=total, members=members,
        worst=tuple((p.key[0], p.key[1], p.loss, p.rtt_excess) for p in worst),
    )  # fmt: skip
