"""What-if on the live pool: its snapshot replayed forward, as it is and with a change.

The replay is the forecast's (``core/forecast.py``): the same ``decide``, running jobs
ending at their runtime limits (stopping ones at their grace end), victims queued again,
nobody new arriving. Each decide call is watched, so the report says per org what the
next hours bring: when its waiting jobs start, how many of its jobs are preempted, what
it holds on average. The change is applied to the snapshot before the replay: quotas,
the policy, nodes drained (cordoned: running work stays, nothing new lands) or added.

The numbers rest on the forecast's assumptions (limits as runtimes, no arrivals): they
compare a change against no change on the same footing, they do not predict the day.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

from scheduler.core.decide import decide as core_decide
from scheduler.core.forecast import Budget, forecast
from values.decisions import Decisions
from values.domain import Node, TopologyPath
from values.quotas import FlavorQuota
from values.snapshot import Policy, Snapshot


@dataclass(frozen=True)
class Change:
    quotas: dict[tuple[str, str], FlavorQuota] = field(default_factory=dict)  # (org, flavor) -> quota
    policy: tuple[str, Policy] | None = None  # (name, the core's knobs)
    drain: tuple[str, ...] = ()
    add_nodes: dict[str, int] = field(default_factory=dict)  # flavor -> how many

    def words(self) -> list[str]:
        out = [f"quota {o}/{f}: nominal {q.nominal}, borrowing_limit {q.borrowing_limit}, "
               f"lending_limit {q.lending_limit}" for (o, f), q in sorted(self.quotas.items())]  # fmt: skip
        if self.policy is not None:
            out.append(f"policy {self.policy[0]}")
        out += [f"drain {n}" for n in self.drain]
        out += [f"add {k} {f} node(s)" for f, k in sorted(self.add_nodes.items())]
        return out


class ChangeError(ValueError):
    """A change that does not fit the snapshot; the message names the option."""


def apply_change(snap: Snapshot, change: Change) -> Snapshot:
    orgs = {o.name: o for o in snap.orgs}
    flavors = {f.name for f in snap.flavors}
    for org, flavor in change.quotas:
        if org not in orgs:
            raise ChangeError(f"--set-quota: no org '{org}' in the snapshot (has: {', '.join(sorted(orgs))})")
        if flavor not in flavors:
            raise ChangeError(f"--set-quota: no flavor '{flavor}' (has: {', '.join(sorted(flavors))})")
    new_orgs = tuple(
        o.model_copy(
            update={"quotas": {**o.quotas, **{f: q for (n, f), q in change.quotas.items() if n == o.name}}}
        )
        for o in snap.orgs
    )
    names = {n.name for n in snap.nodes}
    unknown = [n for n in change.drain if n not in names]
    if unknown:
        raise ChangeError(f"--drain: no node '{unknown[0]}' in the snapshot")
    nodes = [n.model_copy(update={"cordoned": True}) if n.name in change.drain else n for n in snap.nodes]
    for flavor, count in sorted(change.add_nodes.items()):
        like = next((n for n in snap.nodes if n.flavor == flavor), None)
        if like is None:
            raise ChangeError(f"--add-nodes: no node of flavor '{flavor}' to copy the shape of")
        rack = like.topology.model_copy(update={"rack": f"whatif-{flavor}", "nvlink_domain": None})
        nodes += [_new_node(like, f"whatif-{flavor}-{i:02d}", rack) for i in range(count)]
    policy = snap.policy if change.policy is None else change.policy[1]
    return replace(snap, orgs=new_orgs, nodes=tuple(nodes), policy=policy)


def _new_node(like: Node, name: str, topology: TopologyPath) -> Node:
    return like.model_copy(
        update={"name": name, "topology": topology, "health": "healthy", "cordoned": False}
    )


@dataclass
class OrgOutcome:
    waiting: int = 0  # pending at the start
    started: int = 0  # of those, placed within the horizon
    waits_s: list[float] = field(default_factory=list)  # from the snapshot's time to their start
    preempted: int = 0  # its jobs asked to stop
    held_s: float = 0.0  # accelerator-seconds held over the horizon

    def row(self, org: str, hours: float, capacity: int) -> dict[str, object]:
        waits = sorted(self.waits_s)
        return {
            "org": org,
            "waiting": self.waiting,
            "started": self.started,
            "median_wait_h": round(statistics.median(waits) / 3600, 3) if waits else None,
            "max_wait_h": round(waits[-1] / 3600, 3) if waits else None,
            "preempted": self.preempted,
            "avg_share": round(self.held_s / (hours * 3600 * capacity), 4) if capacity else None,
        }


@dataclass(frozen=True)
class Replay:
    orgs: dict[str, dict[str, object]]
    steps: int
    reached_h: float  # how far the replay got, in hours after the snapshot
    # Accelerators held per org from each decide call on (hours after the snapshot).
    held: tuple[tuple[float, dict[str, int]], ...] = ()
    nominal: dict[str, int] = field(default_factory=dict)  # per org, over all flavors


def replay(snap: Snapshot, now: float, hours: float, steps: int = 400) -> Replay:
    """The next ``hours`` of ``snap``, org by org."""
    horizon = now + hours * 3600.0
    outcome: dict[str, OrgOutcome] = defaultdict(OrgOutcome)
    org_of = {r.id: r.spec.org for r in snap.running} | {p.id: p.spec.org for p in snap.pending}
    for p in snap.pending:
        outcome[p.spec.org].waiting += 1
    waiting = {p.id for p in snap.pending}
    seen: list[tuple[float, dict[str, int]]] = []  # (time, accelerators held per org) per step

    def watched(s: Snapshot, t: float) -> Decisions:
        d = core_decide(s, t)
        held: dict[str, int] = defaultdict(int)
        for r in s.running:
            org_of.setdefault(r.id, r.spec.org)
            held[r.spec.org] += r.accelerators
        specs = {p.id: p.spec for p in s.pending}
        for pl in d.placements:  # held from this step on, as the replay starts them
            spec = specs[pl.job_id]
            held[spec.org] += spec.gang.accelerators * sum(k for _, k in pl.assignments)
        seen.append((t, dict(held)))
        if t <= horizon:
            for pl in d.placements:
                if pl.job_id in waiting:
                    waiting.discard(pl.job_id)
                    outcome[org_of[pl.job_id]].started += 1
                    outcome[org_of[pl.job_id]].waits_s.append(t - now)
            for v in d.preemptions:
                outcome[org_of.get(v.job_id, "?")].preempted += 1
        return d

    budget = Budget(steps=steps, horizon_s=hours * 3600.0)
    got = forecast(snap, now, budget=budget, high=None, decide=watched, to_horizon=True)
    # Holdings are piecewise constant between decide calls; after the last one they stay.
    for (t, held), nxt in zip(seen, [s[0] for s in seen[1:]] + [horizon], strict=True):
        dt = max(0.0, min(nxt, horizon) - min(t, horizon))
        for org, acc in held.items():
            outcome[org].held_s += acc * dt
    capacity = sum(n.accelerators for n in snap.nodes)
    names = sorted({o.name for o in snap.orgs} | set(outcome))
    rows = {org: outcome[org].row(org, hours, capacity) for org in names}
    reached = min(got.reached, horizon) - now
    timeline = tuple(((t - now) / 3600, h) for t, h in seen if t <= horizon)
    nominal = {o.name: sum(q.nominal for q in o.quotas.values()) for o in snap.orgs}
    return Replay(
        rows, got.steps, round(reached / 3600, 3) if math.isfinite(reached) else hours, timeline, nominal
    )


def plot(before: Replay, after: Replay, hours: float, change: str, path: Path) -> Path:
    """Accelerators each org holds over the replayed hours, as it is (solid) and with the
    change (dashed), its nominal dotted: where people would rather look than read."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    orgs = sorted({o for _, h in before.held + after.held for o in h} | set(before.nominal))
    fig, ax = plt.subplots(figsize=(9, 4.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, org in enumerate(orgs):
        c = colors[i % len(colors)]
        for replay_, style, tag in ((before, "-", "as is"), (after, "--", "changed")):
            xs = [t for t, _ in replay_.held] + [hours]
            ys = [h.get(org, 0) for _, h in replay_.held]
            if ys:
                ax.step(xs, [*ys, ys[-1]], where="post", linestyle=style, color=c, label=f"{org} ({tag})")
        if before.nominal.get(org):
            ax.axhline(before.nominal[org], color=c, linestyle=":", linewidth=0.8)
    ax.set_xlabel("hours from the snapshot")
    ax.set_ylabel("accelerators held (dotted: nominal)")
    ax.set_title(f"what if: {change}", fontsize=10)
    ax.set_xlim(0, hours)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def side_by_side(before: Replay, after: Replay) -> list[dict[str, object]]:
    """One row per org: each figure as it is, and with the change."""
    out = []
    for org in sorted(set(before.orgs) | set(after.orgs)):
        b, a = before.orgs.get(org, {}), after.orgs.get(org, {})
        row: dict[str, object] = {"org": org}
        for key in ("waiting", "started", "median_wait_h", "max_wait_h", "preempted", "avg_share"):
            row[key] = b.get(key)
            row[f"{key}_changed"] = a.get(key)
        out.append(row)
    return out
