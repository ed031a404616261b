"""The working copy of node capacity for one cycle, with the indexes placement needs.

Nodes are numbered; free capacity lives in flat lists so the hot paths are list
indexing, not attribute lookups. Per flavor, schedulable nodes are bucketed by free
accelerators (a lazily cleaned min-heap per bucket), so a one-replica job finds its
best-fit node without scanning the flavor.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from values.domain import Health, Node
from values.snapshot import RunningJob

Assignments = tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class Shape:
    """Per-replica resources of a gang, the key for memoising placement failures."""

    replicas: int
    acc: int
    cpu: float
    mem: float


def largest_size(
    lo: int, hi: int, probe: Callable[[int], list[tuple[int, int]] | None]
) -> tuple[int, list[tuple[int, int]]] | None:
    """The largest gang size in [lo, hi] that ``probe`` places (and where), for an elastic
    gang: room and quota only shrink as the size grows, so it bisects; the whole size is
    tried first, the common case on a pool with room. ``probe`` must not change the pool."""
    if lo > hi:
        return None
    nodes = probe(hi)
    if nodes is not None:
        return hi, nodes
    best = None
    hi -= 1
    while lo <= hi:
        mid = (lo + hi) // 2
        nodes = probe(mid)
        if nodes is None:
            hi = mid - 1
        else:
            best, lo = (mid, nodes), mid + 1
    return best


def replicas_in(s: Shape, acc: float, cpu: float, mem: float) -> int:
    """How many replicas of ``s`` (at most its gang size) fit in this much room."""
    n = s.replicas
    if s.acc:
        n = min(n, int(acc // s.acc))
    if s.cpu:
        n = min(n, int(cpu // s.cpu + 1e-9))
    if s.mem:
        n = min(n, int(mem // s.mem + 1e-9))
    return max(0, n)


@dataclass(frozen=True, slots=True)
class Fit:
    """A job's constraints on where its gang may go (part of the memo keys)."""

    level: str | None = None  # "rack" or "spine" when required
    required: bool = False
    avoid: frozenset[str] = frozenset()


ANYWHERE = Fit()


class PoolState:
    def __init__(self, nodes: Iterable[Node]) -> None:
        ordered = sorted(nodes, key=lambda n: n.name)
        self.names = [n.name for n in ordered]
        self.index = {n.name: i for i, n in enumerate(ordered)}
        self.flavor = [n.flavor for n in ordered]
        self.rack = [(n.topology.zone, n.topology.spine, n.topology.rack) for n in ordered]
        self.spine = [(n.topology.zone, n.topology.spine) for n in ordered]
        self.cap_acc = [n.accelerators for n in ordered]
        self.free_acc = [n.accelerators for n in ordered]
        self.free_cpu = [n.cpu for n in ordered]
        self.free_mem = [n.memory_gb for n in ordered]
        self.total_cpu = [n.cpu for n in ordered]
        self.total_mem = [n.memory_gb for n in ordered]
        # Schedulable for new work at all (not cordoned, not unhealthy).
        self.usable = [not n.cordoned and n.health != Health.UNHEALTHY for n in ordered]
        self.degraded = [n.health == Health.DEGRADED for n in ordered]
        self.unhealthy = [n.health == Health.UNHEALTHY for n in ordered]
        self.by_flavor: dict[str, list[int]] = {}
        for i, f in enumerate(self.flavor):
            self.by_flavor.setdefault(f, []).append(i)
        self.capacity = {f: sum(self.cap_acc[i] for i in idx) for f, idx in self.by_flavor.items()}
        self._buckets: dict[str, list[list[int]]] = {}
        self._free_total: dict[str, int] = {}
        # Schedulable nodes with any free accelerator: in a busy pool, far fewer than all.
        self._has_room: dict[str, set[int]] = {}
        self._profiles: dict[str, dict[tuple[tuple[str, str, str], int, float, float], int]] = {}

    def with_free(self, free_acc: list[int], free_cpu: list[float], free_mem: list[float]) -> PoolState:
        """A new working copy over the same nodes with this free capacity (lists owned by
        the copy): the per-node facts, which only the nodes decide, are shared, not rebuilt."""
        pool = object.__new__(PoolState)
        pool.__dict__.update(self.__dict__)
        pool.free_acc, pool.free_cpu, pool.free_mem = free_acc, free_cpu, free_mem
        pool._buckets, pool._free_total, pool._has_room = {}, {}, {}
        return pool  # _profiles is shared: it depends on the nodes alone

    # -- charging capacity -------------------------------------------------------------

    def charge_running(self, job: RunningJob) -> None:
        """Charge a running job before the indexes exist (``build_buckets`` comes after)."""
        g = job.spec.gang
        a, c, m = g.accelerators, g.cpu, g.memory_gb
        index, free_acc, free_cpu, free_mem = self.index, self.free_acc, self.free_cpu, self.free_mem
        for node, n in job.assignments:
            i = index.get(node)
            if i is not None:
                free_acc[i] -= n * a
                free_cpu[i] -= n * c
                free_mem[i] -= n * m

    def release_of(
        self, jobs: Iterable[RunningJob], into: dict[int, tuple[int, float, float]] | None = None
    ) -> dict[int, tuple[int, float, float]]:
        """What these jobs would free, per node index, once they exit (added to ``into``)."""
        extra: dict[int, tuple[int, float, float]] = {} if into is None else into
        for r in jobs:
            g = r.spec.gang
            for node, n in r.assignments:
                i = self.index.get(node)
                if i is not None:
                    a, c, m = extra.get(i, (0, 0.0, 0.0))
                    extra[i] = (a + n * g.accelerators, c + n * g.cpu, m + n * g.memory_gb)
        return extra

    def take(self, i: int, acc: int, cpu: float, mem: float) -> None:
        self.free_acc[i] -= acc
        self.free_cpu[i] -= cpu
        self.free_mem[i] -= mem
        buckets = self._buckets.get(self.flavor[i])
        if buckets is not None and acc and self.usable[i]:
            heapq.heappush(buckets[max(0, self.free_acc[i])], i)
            self._free_total[self.flavor[i]] -= acc
            if self.free_acc[i] > 0:
                self._has_room[self.flavor[i]].add(i)
            else:
                self._has_room[self.flavor[i]].discard(i)

    def hold(
        self,
        placement: list[tuple[int, int]],
        s: Shape,
        released: dict[int, tuple[int, float, float]] | None = None,
    ) -> dict[int, tuple[int, float, float]]:
        """Take the currently free part of a future placement out of the pool, so later
        jobs in the cycle cannot use it; what ``released`` (victims) will free on a node is
        not held again. Returns what was held per node."""
        held: dict[int, tuple[int, float, float]] = {}
        for i, n in placement:
            ra, rc, rm = released.get(i, (0, 0.0, 0.0)) if released else (0, 0.0, 0.0)
            a = min(max(0, self.free_acc[i]), max(0, n * s.acc - ra))
            c = min(max(0.0, self.free_cpu[i]), max(0.0, n * s.cpu - rc))
            m = min(max(0.0, self.free_mem[i]), max(0.0, n * s.mem - rm))
            if a or c or m:
                held[i] = (a, c, m)
                self.take(i, a, c, m)
        return held

    def build_buckets(self) -> None:
        """Index schedulable nodes by free accelerators; call once charging is done."""
        for flavor, idx in self.by_flavor.items():
            top = max((self.cap_acc[i] for i in idx), default=0)
            buckets: list[list[int]] = [[] for _ in range(top + 1)]
            for i in idx:
                if self.usable[i]:
                    buckets[max(0, self.free_acc[i])].append(i)
            for b in buckets:
                heapq.heapify(b)
            self._buckets[flavor] = buckets
            self._free_total[flavor] = sum(max(0, self.free_acc[i]) for i in idx if self.usable[i])
            self._has_room[flavor] = {i for i in idx if self.usable[i] and self.free_acc[i] > 0}

    def free_total(self, flavor: str) -> int:
        """Free accelerators on the flavor's schedulable nodes."""
        return self._free_total.get(flavor, 0)

    # -- placement ---------------------------------------------------------------------

    def slots(self, i: int, s: Shape, extra: dict[int, tuple[int, float, float]] | None = None) -> int:
        acc, cpu, mem = self.free_acc[i], self.free_cpu[i], self.free_mem[i]
        if extra and i in extra:
            ea, ec, em = extra[i]
            acc, cpu, mem = acc + ea, cpu + ec, mem + em
        return replicas_in(s, acc, cpu, mem)

    def best_fit_single(self, flavor: str, s: Shape, avoid: frozenset[str]) -> int | None:
        """Best-fit node for a one-replica gang from the bucket index, or None."""
        buckets = self._buckets[flavor]
        for k in range(max(s.acc, 0), len(buckets)):
            heap = buckets[k]
            # Drop stale entries (nodes whose free count moved on) from the top.
            while heap and max(0, self.free_acc[heap[0]]) != k:
                heapq.heappop(heap)
            if not heap:
                continue
            i = heap[0]
            if self._fits_one(i, s, avoid):
                return i
            for j in sorted(set(heap)):  # rare: the smallest node lacks CPU or memory
                if max(0, self.free_acc[j]) == k and self._fits_one(j, s, avoid):
                    return j
        return None

    def _fits_one(self, i: int, s: Shape, avoid: frozenset[str]) -> bool:
        if avoid and self.names[i] in avoid:
            return False
        return (
            self.free_acc[i] >= s.acc
            and self.free_cpu[i] + 1e-9 >= s.cpu
            and self.free_mem[i] + 1e-9 >= s.mem
        )

    def place(
        self,
        flavor: str,
        s: Shape,
        fit: Fit = ANYWHERE,
        *,
        extra: dict[int, tuple[int, float, float]] | None = None,
        ignore_health: bool = False,
        empty: bool = False,
        prefer: tuple[str, ...] = (),
    ) -> list[tuple[int, int]] | None:
        """Nodes for the whole gang as (node index, replicas), or None if it does not fit.

        Packs into one rack if any can hold it (best fit), else one spine, else across
        spines; a required ``fit.level`` stops there. ``empty`` asks whether it would fit on an
        empty, healthy pool (for rejecting gangs that never can). ``prefer``: nodes to use
        first where they have room (see ``_pack_preferring``); it changes where the gang
        goes, never whether it fits, so failures stay memoisable without it.
        """
        level, required, avoid = fit.level, fit.required, fit.avoid
        if empty:
            return self._fits_empty(flavor, s, fit)
        if s.replicas == 1 and extra is None and not ignore_health:
            i = self._preferred_single(flavor, s, avoid, prefer) if prefer else None
            if i is None:
                i = self.best_fit_single(flavor, s, avoid)
            return None if i is None else [(i, 1)]
        per_node: dict[int, int] = {}
        # The hot loop of a placement search: slots() inlined, and a node without the
        # accelerators for one replica skipped before any division.
        usable, names, free_acc, free_cpu, free_mem = (
            self.usable,
            self.names,
            self.free_acc,
            self.free_cpu,
            self.free_mem,
        )
        sa, sc, sm, sr = s.acc, s.cpu, s.mem, s.replicas
        for i in self._scan(flavor, s, extra, ignore_health):
            if not ignore_health and not usable[i]:
                continue
            if avoid and names[i] in avoid:
                continue
            acc, cpu, mem = free_acc[i], free_cpu[i], free_mem[i]
            if extra and i in extra:
                ea, ec, em = extra[i]
                acc, cpu, mem = acc + ea, cpu + ec, mem + em
            if sa:
                if acc < sa:
                    continue
                n = min(sr, int(acc // sa))
            else:
                n = sr
            if sc:
                n = min(n, int(cpu // sc + 1e-9))
            if sm:
                n = min(n, int(mem // sm + 1e-9))
            if n > 0:
                per_node[i] = n
        if sum(per_node.values()) < s.replicas:
            return None
        kept = [i for n in prefer if (i := self.index.get(n)) is not None and i in per_node] if prefer else []
        if not ignore_health:
            whole = next((i for i in kept if per_node[i] >= s.replicas), None)
            single = [(whole, s.replicas)] if whole is not None else self._single_node(per_node, s)
            if single is not None:
                return single
            per_node = {i: n for i, n in per_node.items() if not self.degraded[i]}
            if sum(per_node.values()) < s.replicas:
                return None
            kept = [i for i in kept if i in per_node]
        if kept:
            return self._pack_preferring(per_node, kept, s.replicas, level, required)
        return self._pack(per_node, s.replicas, level, required)

    def _preferred_single(
        self, flavor: str, s: Shape, avoid: frozenset[str], prefer: tuple[str, ...]
    ) -> int | None:
        for name in prefer:
            i = self.index.get(name)
            if i is not None and self.flavor[i] == flavor and self.usable[i] and self._fits_one(i, s, avoid):
                return i
        return None

    def _pack_preferring(
        self, per_node: dict[int, int], kept: list[int], r: int, level: str | None, required: bool
    ) -> list[tuple[int, int]] | None:
        """The preferred nodes first, in their order (a gang back after a failure keeps
        its ranks where they were), then the nodes nearest to them: their racks, then
        their spines, then the rest with the most room first. Under a required level, the
        rest must come from the preferred nodes' own rack or spine; where that has no room
        the gang is packed afresh, as if nothing were preferred."""
        racks = {self.rack[i] for i in kept}
        spines = {self.spine[i] for i in kept}
        bound = required and level in ("rack", "spine")
        if bound and len(racks if level == "rack" else spines) > 1:
            return self._pack(per_node, r, level, required)
        have = sum(per_node[i] for i in kept)
        if have >= r:
            return self._fill(per_node, kept, r)
        chosen = set(kept)
        rest = [i for i in per_node if i not in chosen]
        if bound:
            if level == "rack":
                rest = [i for i in rest if self.rack[i] in racks]
            else:
                rest = [i for i in rest if self.spine[i] in spines]
            if have + sum(per_node[i] for i in rest) < r:
                return self._pack(per_node, r, level, required)
        rest.sort(key=lambda i: (self.rack[i] not in racks, self.spine[i] not in spines, -per_node[i], i))
        return self._fill(per_node, kept + rest, r)

    def _scan(
        self, flavor: str, s: Shape, extra: dict[int, tuple[int, float, float]] | None, any_health: bool
    ) -> Iterable[int]:
        """The nodes worth a look: those with free accelerators or released capacity."""
        if s.acc == 0 or flavor not in self._has_room:
            return self.by_flavor.get(flavor, ())
        room = self._has_room[flavor]
        if any_health:
            room = room | {i for i in self.by_flavor[flavor] if not self.usable[i] and self.free_acc[i] > 0}
        if not extra:
            return room
        return room | {i for i in extra if self.flavor[i] == flavor}

    def _fits_empty(self, flavor: str, s: Shape, fit: Fit) -> list[tuple[int, int]] | None:
        """Whether the gang fits an empty, healthy pool, counted per rack from node
        profiles (kinds of capacity), so it costs a few operations, not a scan of every
        node. Returns a token placement (the first node, all replicas) when it fits."""
        profiles = self._profiles.get(flavor)
        if profiles is None:
            profiles = {}
            for i in self.by_flavor.get(flavor, ()):
                key = (self.rack[i], self.cap_acc[i], self.total_cpu[i], self.total_mem[i])
                profiles[key] = profiles.get(key, 0) + 1
            self._profiles[flavor] = profiles
        rack_room: dict[tuple[str, str, str], int] = {}
        for (rack, acc, cpu, mem), count in profiles.items():
            rack_room[rack] = rack_room.get(rack, 0) + replicas_in(s, acc, cpu, mem) * count
        if fit.required and fit.level == "rack":
            best = max(rack_room.values(), default=0)
        elif fit.required and fit.level == "spine":
            spine_room: dict[tuple[str, str], int] = {}
            for rack, room in rack_room.items():
                spine_room[rack[:2]] = spine_room.get(rack[:2], 0) + room
            best = max(spine_room.values(), default=0)
        else:
            best = sum(rack_room.values())
        nodes = self.by_flavor.get(flavor, [])
        return [(nodes[0], s.replicas)] if nodes and best >= s.replicas else None

    @staticmethod
    def _single_node(per_node: dict[int, int], s: Shape) -> list[tuple[int, int]] | None:
        # A gang that fits on one node may use a degraded one: no slow link inside a node.
        fitting = [(n, i) for i, n in per_node.items() if n >= s.replicas]
        if not fitting:
            return None
        _, i = min(fitting)
        return [(i, s.replicas)]

    def _pack(
        self, per_node: dict[int, int], r: int, level: str | None, required: bool
    ) -> list[tuple[int, int]] | None:
        racks: dict[tuple[str, str, str], list[int]] = {}
        for i in per_node:
            racks.setdefault(self.rack[i], []).append(i)
        rack_room = {k: sum(per_node[i] for i in v) for k, v in racks.items()}
        fit = [(room, k) for k, room in rack_room.items() if room >= r]
        if fit:
            return self._fill(per_node, self._order(per_node, racks[min(fit)[1]]), r)
        if required and level == "rack":
            return None
        spines: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
        for k in racks:
            spines.setdefault(k[:2], []).append(k)
        spine_room = {sp: sum(rack_room[k] for k in ks) for sp, ks in spines.items()}
        fit_sp = [(room, sp) for sp, room in spine_room.items() if room >= r]
        if fit_sp:
            chosen = spines[min(fit_sp)[1]]
        elif required and level == "spine":
            return None
        else:
            chosen = sorted(racks, key=lambda k: (-spine_room[k[:2]], k[:2], -rack_room[k], k))
            return self._fill(per_node, [i for k in chosen for i in self._order(per_node, racks[k])], r)
        chosen = sorted(chosen, key=lambda k: (-rack_room[k], k))
        return self._fill(per_node, [i for k in chosen for i in self._order(per_node, racks[k])], r)

    @staticmethod
    def _order(per_node: dict[int, int], nodes: list[int]) -> list[int]:
        return sorted(nodes, key=lambda i: (-per_node[i], i))

    def _fill(self, per_node: dict[int, int], nodes: list[int], r: int) -> list[tuple[int, int]]:
        # ``nodes`` comes ordered: racks with most room first, and within a rack the nodes
        # with most room first, so the gang spans as few nodes and racks as it can.
        out: list[tuple[int, int]] = []
        left = r
        for i in nodes:
            n = min(per_node[i], left)
            out.append((i, n))
            left -= n
            if left == 0:
                return out
        raise AssertionError("room was counted but not found")  # pragma: no cover
