"""Quota arithmetic for one scheduling cycle: who holds what, who may borrow how much.

The model is Kueue's cohort with lending limits. Each org keeps ``private = nominal -
lending_limit`` for itself; all the rest of a flavor's capacity (lendable nominal and
capacity no org is entitled to) is one shared pool. An org's use above its private part
comes out of the shared pool, so idle private quota is never used by anybody else, and an
org is never promised more than its nominal. ``QuotaBook`` is a mutable working copy: the
core builds one per cycle from the snapshot and discards it afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from values.quotas import Org


class Verdict(Enum):
    NOMINAL = "nominal"  # fits within the org's guaranteed quota
    BORROWED = "borrowed"  # fits, partly on idle capacity lent by others
    QUOTA = "quota"  # above nominal + borrowing_limit
    LENDING = "lending"  # within the org's limit, but the shared pool is used up


@dataclass(slots=True)
class _OrgFlavor:
    nominal: int
    ceiling: float  # nominal + borrowing_limit (inf when unbounded)
    private: int
    alloc: int = 0


class QuotaBook:
    def __init__(self, orgs: Iterable[Org], capacity: Mapping[str, int], borrowing: bool = True) -> None:
        self.capacity = dict(capacity)
        self._rows: dict[tuple[str, str], _OrgFlavor] = {}
        private_total = dict.fromkeys(self.capacity, 0)
        for org in orgs:
            for flavor in self.capacity:
                q = org.quota(flavor)
                if not borrowing:
                    ceiling: float = q.nominal
                elif q.borrowing_limit is None:
                    ceiling = math.inf
                else:
                    ceiling = q.nominal + q.borrowing_limit
                self._rows[(org.name, flavor)] = _OrgFlavor(q.nominal, ceiling, q.guaranteed_private)
                private_total[flavor] += q.guaranteed_private
        self.shared_cap = {f: self.capacity[f] - private_total[f] for f in self.capacity}
        self.shared_used = dict.fromkeys(self.capacity, 0)
        self._versions: dict[str, int] = {}

    def version(self, org: str) -> int:
        """Counts changes to the org's holdings, so derived values can be cached."""
        return self._versions.get(org, 0)

    def alloc(self, org: str, flavor: str) -> int:
        return self._rows[(org, flavor)].alloc

    def nominal(self, org: str, flavor: str) -> int:
        return self._rows[(org, flavor)].nominal

    def is_borrowing(self, org: str, flavor: str) -> bool:
        row = self._rows[(org, flavor)]
        return row.alloc > row.nominal

    def check(self, org: str, flavor: str, q: int) -> Verdict:
        row = self._rows[(org, flavor)]
        new = row.alloc + q
        if new > row.ceiling:
            return Verdict.QUOTA
        delta = max(0, new - row.private) - max(0, row.alloc - row.private)
        if self.shared_used[flavor] + delta > self.shared_cap[flavor]:
            return Verdict.LENDING
        return Verdict.NOMINAL if new <= row.nominal else Verdict.BORROWED

    def add(self, org: str, flavor: str, q: int) -> None:
        """Charge ``q`` accelerators (negative to release) to ``org``."""
        row = self._rows[(org, flavor)]
        before = max(0, row.alloc - row.private)
        row.alloc += q
        self._versions[org] = self._versions.get(org, 0) + 1
        self.shared_used[flavor] += max(0, row.alloc - row.private) - before

    def borrowed(self, org: str, flavor: str, promised: int = 0) -> int:
        """Accelerators above nominal the org holds, less ``promised`` (booked ahead for
        a preemption's beneficiary, not held yet)."""
        row = self._rows[(org, flavor)]
        return max(0, row.alloc - promised - row.nominal)

    # -- the questions the cycle asks; each is answered here only ----------------------

    def within_nominal(self, org: str, flavor: str, q: int) -> bool:
        """Would ``q`` more accelerators keep the org within its guarantee?"""
        row = self._rows[(org, flavor)]
        return row.alloc + q <= row.nominal

    def room_in_nominal(self, org: str, flavor: str) -> int:
        """Accelerators left of the org's guarantee (negative while it borrows)."""
        row = self._rows[(org, flavor)]
        return row.nominal - row.alloc

    def above_nominal(self, org: str, flavor: str, held: int) -> bool:
        """Is ``held`` (a count other than the book's, e.g. without jobs already asked to
        stop) borrowed capacity? Reclaim takes only that."""
        return held > self._rows[(org, flavor)].nominal

    def over_ceiling(self, org: str, flavor: str, q: int) -> float:
        """By how much ``q`` more would exceed nominal + borrowing limit (<= 0: not)."""
        row = self._rows[(org, flavor)]
        return row.alloc + q - row.ceiling

    def most_holdable(self, org: str, flavor: str) -> float:
        """The most the org could ever hold: its ceiling, or its private part plus the
        whole shared pool if that is less."""
        row = self._rows[(org, flavor)]
        return min(row.ceiling, row.private + self.shared_cap[flavor])
