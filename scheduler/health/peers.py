"""Who probes whom (Pingmesh): every rack mate, plus a rotating sample elsewhere.

A node probes the other nodes of its rack (a rack is small and bounded) and
``other_rack_peers`` nodes in other racks, one per rack taken in turn, redrawn each
round. The probe load of a node is bounded, so the pool's total grows linearly with its
size, and over the rounds every rack is probed from every other.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Member:
    name: str
    rack: str
    spine: str = ""


def _spin(*parts: object) -> int:
    """A stable number from the parts (the same in every process, unlike hash())."""
    digest = hashlib.sha256("\x00".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def assign_peers(node: str, members: Sequence[Member], other_rack_peers: int, round_no: int) -> list[str]:
    """The peers ``node`` probes in round ``round_no``; sorted, without ``node`` itself."""
    me = next((m for m in members if m.name == node), None)
    if me is None:
        return []
    racks: dict[str, list[str]] = defaultdict(list)
    for m in members:
        racks[m.rack].append(m.name)
    mates = [n for n in racks[me.rack] if n != node]
    others = sorted(r for r in racks if r != me.rack)
    chosen: list[str] = []
    if others and other_rack_peers > 0:
        total_other = sum(len(racks[r]) for r in others)
        if total_other <= other_rack_peers:
            chosen = [n for r in others for n in racks[r]]
        else:
            # Racks in turn, starting at an offset that moves every round, and in each
            # rack the next node in a per-node order: spreads the load and the coverage.
            start = (_spin(node) + round_no * other_rack_peers) % len(others)
            taken: dict[str, int] = defaultdict(int)
            i = 0
            while len(chosen) < other_rack_peers:
                rack = others[(start + i) % len(others)]
                nodes = sorted(racks[rack])
                k = taken[rack]
                if k < len(nodes):
                    pick = nodes[(_spin(node, rack) + round_no + k) % len(nodes)]
                    chosen.append(pick)
                    taken[rack] += 1
                i += 1
    return sorted(set(mates) | set(chosen))


def round_of(now: float, rotate_seconds: float) -> int:
    return int(now // rotate_seconds)
