"""An org's standing on a flavor: what it holds, borrows and lends, and to whom.

The quota book (``accounting.py``) knows totals only: an org above its nominal draws on
the flavor's shared pool, made of capacity no org is entitled to and of what orgs lend.
Naming lenders takes a convention, and this is it: borrowing is drawn first from the
capacity no org is entitled to, then from the lenders' idle lendable quota in proportion
to what each has idle (whole accelerators, largest remainder); borrowers are matched to
those sources in name order. The totals are exact, whatever the split.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from values.quotas import Org

UNASSIGNED = "(unassigned)"  # capacity beyond every org's nominal


@dataclass(frozen=True)
class Standing:
    nominal: int
    in_use: int
    borrowed: int  # held above nominal
    lent: int  # of its idle quota, held by borrowers: what reclaim can take back
    borrowed_from: dict[str, int] = field(default_factory=dict)
    lent_to: dict[str, int] = field(default_factory=dict)


def apportion(total: int, weights: Mapping[str, int]) -> dict[str, int]:
    """``total`` split in proportion to ``weights`` in whole units (largest remainder,
    ties by name); the parts sum to ``total``."""
    whole = sum(weights.values())
    if total <= 0 or whole <= 0:
        return {}
    exact = {k: total * w / whole for k, w in weights.items() if w > 0}
    parts = {k: int(v) for k, v in exact.items()}
    short = total - sum(parts.values())
    for k in sorted(exact, key=lambda k: (-(exact[k] - parts[k]), k))[:short]:
        parts[k] += 1
    return {k: v for k, v in parts.items() if v}


def standings(
    orgs: Iterable[Org], capacity: Mapping[str, int], held: Mapping[tuple[str, str], int]
) -> dict[tuple[str, str], Standing]:
    """Every org's standing on every flavor of ``capacity``; ``held``: accelerators held
    per (org, flavor), stopping jobs included (they hold their nodes until they exit)."""
    orgs = sorted(orgs, key=lambda o: o.name)
    out: dict[tuple[str, str], Standing] = {}
    for flavor, cap in sorted(capacity.items()):
        nominal = {o.name: o.quota(flavor).nominal for o in orgs}
        use = {o.name: held.get((o.name, flavor), 0) for o in orgs}
        excess = {n: use[n] - nominal[n] for n in nominal if use[n] > nominal[n]}
        idle = {}
        for o in orgs:
            q = o.quota(flavor)
            lendable = q.nominal - q.guaranteed_private
            idle[o.name] = min(lendable, max(0, q.nominal - use[o.name]))
        wanted = sum(excess.values())
        from_unassigned = min(wanted, max(0, cap - sum(nominal.values())))
        sources = {UNASSIGNED: from_unassigned} if from_unassigned else {}
        sources |= apportion(min(wanted - from_unassigned, sum(idle.values())), idle)
        flows: dict[tuple[str, str], int] = {}  # (borrower, source) -> accelerators
        left = dict(sources)
        for borrower in sorted(excess):
            need = excess[borrower]
            for source in left:
                got = min(need, left[source])
                if got:
                    flows[(borrower, source)] = got
                    left[source] -= got
                    need -= got
        for o in orgs:
            n = o.name
            takes = {src: k for (b, src), k in flows.items() if b == n}
            gives = {b: k for (b, src), k in flows.items() if src == n}
            out[(n, flavor)] = Standing(
                nominal=nominal[n], in_use=use[n], borrowed=excess.get(n, 0), lent=sum(gives.values()),
                borrowed_from=takes, lent_to=gives,
            )  # fmt: skip
    return out
