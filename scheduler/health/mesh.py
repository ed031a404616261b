"""Evidence kept between evaluations: the reports of the last window, per pair and per node.

Stateful but clock-free: every call takes ``now``. Pair evidence is per direction as
reported and merged into undirected ``PairStat`` on read; the RTT baseline of a pair is
the lowest report median it showed in the baseline window (its own floor).
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from statistics import median

from scheduler.health.localize import PairStat
from values.reports import CLOCK_SLOWDOWNS, IB_ERROR_COUNTERS, NIC_ERROR_COUNTERS, XID_FATAL, AgentReport


@dataclass(frozen=True)
class NodeSample:
    at: float
    nic_errors: int = 0
    ib_errors: int = 0
    xids: tuple[int, ...] = ()
    ecc_uncorrected: int = 0
    ecc_corrected: int = 0
    max_temperature: float | None = None
    clock_slowdowns: tuple[str, ...] = ()


@dataclass(frozen=True)
class NodeSignals:
    """A node's own counters over the window, as rates and facts."""

    nic_errors_per_second: float = 0.0
    ib_errors_per_second: float = 0.0
    fatal_xids: tuple[int, ...] = ()
    other_xids: tuple[int, ...] = ()
    ecc_uncorrected: int = 0
    ecc_corrected: int = 0
    max_temperature: float | None = None
    clock_slowdowns: tuple[str, ...] = ()  # of CLOCK_SLOWDOWNS, seen in the window


@dataclass
class Mesh:
    window: float
    baseline_window: float
    _pairs: dict[tuple[str, str], deque[tuple[float, int, int, float | None]]] = field(
        default_factory=lambda: defaultdict(deque)
    )
    _floors: dict[tuple[str, str], deque[tuple[float, float]]] = field(
        default_factory=lambda: defaultdict(deque)
    )
    _nodes: dict[str, deque[NodeSample]] = field(default_factory=lambda: defaultdict(deque))

    def add(self, node: str, report: AgentReport, at: float) -> None:
        for p in report.probes:
            if p.peer == node:
                continue
            self._pairs[(node, p.peer)].append((at, p.sent, p.lost, p.rtt_median))
            if p.rtt_median is not None:
                floors = self._floors[(node, p.peer)]
                # A monotone deque: the window minimum in O(1) amortised.
                while floors and floors[-1][1] >= p.rtt_median:
                    floors.pop()
                floors.append((at, p.rtt_median))
        nic = sum(
            v for counters in report.nic.values() for k, v in counters.items() if k in NIC_ERROR_COUNTERS
        )
        ib = sum(
            v
            for counters in report.infiniband.values()
            for k, v in counters.items()
            if k in IB_ERROR_COUNTERS
        )
        temps = [g.temperature for g in report.gpus if g.temperature is not None]
        slowdowns = {e for g in report.gpus for e in g.clock_events} & CLOCK_SLOWDOWNS
        self._nodes[node].append(
            NodeSample(
                at=at, nic_errors=nic, ib_errors=ib, xids=tuple(x for g in report.gpus for x in g.xid_errors),
                ecc_uncorrected=sum(g.ecc_uncorrected for g in report.gpus),
                ecc_corrected=sum(g.ecc_corrected for g in report.gpus),
                max_temperature=max(temps) if temps else None,
                clock_slowdowns=tuple(sorted(slowdowns)),
            )
        )  # fmt: skip

    def prune(self, now: float) -> None:
        for d in self._pairs.values():
            while d and d[0][0] <= now - self.window:
                d.popleft()
        for f in self._floors.values():
            while len(f) > 1 and f[0][0] <= now - self.baseline_window:
                f.popleft()
        for n in self._nodes.values():
            while n and n[0].at <= now - self.window:
                n.popleft()

    def forget(self, node: str) -> None:
        """Drop a node's evidence (it left the pool)."""
        for key in [k for k in self._pairs if node in k]:
            del self._pairs[key]
            self._floors.pop(key, None)
        self._nodes.pop(node, None)

    def pairs(self, exclude: Iterable[str] = ()) -> list[PairStat]:
        """Undirected pairs over the window; pairs touching ``exclude`` are left out."""
        skip = set(exclude)
        merged: dict[tuple[str, str], list[tuple[int, int, float | None]]] = defaultdict(list)
        for (src, dst), samples in self._pairs.items():
            if src in skip or dst in skip or not samples:
                continue
            key = (src, dst) if src <= dst else (dst, src)
            merged[key].extend((s, lost, rtt) for _, s, lost, rtt in samples)
        out = []
        for (a, b), both in sorted(merged.items()):
            rtts = [r for _, _, r in both if r is not None]
            floors = [f[0][1] for k in ((a, b), (b, a)) if (f := self._floors.get(k))]
            out.append(
                PairStat(
                    a=a, b=b, sent=sum(s for s, _, _ in both), lost=sum(lost for _, lost, _ in both),
                    rtt=median(rtts) if rtts else None, baseline=min(floors) if floors else None,
                )
            )  # fmt: skip
        return out

    def signals(self, node: str) -> NodeSignals:
        samples = self._nodes.get(node)
        if not samples:
            return NodeSignals()
        xids = [x for s in samples for x in s.xids]
        temps = [s.max_temperature for s in samples if s.max_temperature is not None]
        return NodeSignals(
            nic_errors_per_second=sum(s.nic_errors for s in samples) / self.window,
            ib_errors_per_second=sum(s.ib_errors for s in samples) / self.window,
            fatal_xids=tuple(sorted({x for x in xids if x in XID_FATAL})),
            other_xids=tuple(sorted({x for x in xids if x not in XID_FATAL})),
            ecc_uncorrected=sum(s.ecc_uncorrected for s in samples),
            ecc_corrected=sum(s.ecc_corrected for s in samples),
            max_temperature=max(temps) if temps else None,
            clock_slowdowns=tuple(sorted({c for s in samples for c in s.clock_slowdowns})),
        )

    def reporting_nodes(self) -> set[str]:
        return {n for n, s in self._nodes.items() if s}


def _errors(counters: dict[str, dict[str, int]], kinds: frozenset[str]) -> int:
    return sum(v for per in counters.values() for k, v in per.items() if k in kinds)
