"""Multi-cycle stories and determinism: the decisions over time, not one snapshot."""

from __future__ import annotations

import dataclasses
import random

from scheduler.core import decide
from values.decisions import Decisions, PendingReason, PlaceReason
from values.snapshot import Snapshot

from .invariants import check_invariants
from .scenario import (
    A100,
    apply,
    expire,
    node,
    org,
    pending,
    quota,
    rack,
    running,
    snapshot,
    submit,
)


def _stream_of_small_jobs(cycles: int, step: float) -> tuple[float, float | None, list[str]]:
    """4 nodes; the big gang g (4x8) arrives while three 8-GPU jobs run (ending at 100,
    150, 200). A 1x8, 100 s job arrives every ``step`` seconds, more than the pool can
    drain. Returns (the first reservation's start, when g started, backfilled jobs)."""
    snap = snapshot(
        rack("r0", 4),
        [org("a", h100=32)],
        [
            running("s0", on=["r0-n0"], runtime=100),
            running("s1", on=["r0-n1"], runtime=150),
            running("s2", on=["r0-n2"], runtime=200),
        ],
        [pending("g", replicas=4, submitted=0)],
    )
    promised: float | None = None
    started: float | None = None
    backfilled: list[str] = []
    for k in range(cycles):
        now = k * step
        snap, _ = expire(snap, now)
        snap = submit(snap, pending(f"small{k}", runtime=100, submitted=now))
        d = decide(snap, now)
        check_invariants(snap, d, now)
        res = {r.job_id: r for r in d.reservations}
        if "g" in res:
            # The promise holds: later cycles may only bring it forward.
            assert promised is None or res["g"].start_at <= promised, f"t={now}: g pushed back"
            promised = res["g"].start_at if promised is None else promised
        backfilled += [p.job_id for p in d.placements if p.reason == PlaceReason.BACKFILL]
        if d.placed("g") is not None:
            started = now
            break
        snap = apply(snap, d, now)
    assert promised is not None, "g never got a reservation"
    return promised, started, backfilled


def test_large_gang_does_not_starve_behind_a_stream_of_small_jobs() -> None:
    promised, started, backfilled = _stream_of_small_jobs(cycles=40, step=25)
    assert promised == 200, "g can start once the last of s0..s2 ends"
    assert started is not None and started <= promised, f"g started at {started}, promised {promised}"
    assert backfilled, "small jobs that end in time used the held node meanwhile"


def _decisions_key(d: Decisions) -> tuple[object, ...]:
    """Decisions with list order normalised (for inputs given in another order)."""
    return (
        sorted((p.job_id, p.flavor, p.assignments, p.reason, p.borrowed) for p in d.placements),
        sorted((p.job_id, p.reason, p.beneficiary or "") for p in d.preemptions),
        sorted((r.job_id, r.flavor, r.nodes, r.start_at) for r in d.reservations),
        sorted((r.job_id, r.reason) for r in d.rejections),
        sorted((j, s.reason, s.estimated_start or -1.0, s.blocked_by or "") for j, s in d.pending.items()),
    )


def _busy_snapshot() -> Snapshot:
    return snapshot(
        [rack("r0", 3), rack("r1", 3, spine="s1"), node("g0", A100), node("g1", A100)],
        [org("a", h100=16), org("b", h100=quota(16, lend=8), a100=8), org("c", weight=2.0)],
        [
            running("a-run", "a", on=["r0-n0"], runtime=500, prio=100),
            running("c-run", "c", on=["r0-n1", "r1-n0"], runtime=900),
            running("c-run2", "c", on=["r1-n1"], acc=4),
        ],
        [
            pending("a1", "a", replicas=2, submitted=3),
            pending("a2", "a", prio=1000, submitted=4),
            pending("b1", "b", flavors=(A100, "h100"), replicas=2, submitted=1),
            pending("b2", "b", acc=4, runtime=50, submitted=2),
            pending("c1", "c", replicas=3, submitted=0),
            pending("x", "nobody"),
        ],
        usage={"c": {"h100": 1e6}},
    )


def test_same_snapshot_same_decisions() -> None:
    snap = _busy_snapshot()
    assert decide(snap, 10) == decide(snap, 10)


def test_input_order_does_not_matter() -> None:
    snap = _busy_snapshot()
    want = _decisions_key(decide(snap, 10))
    rng = random.Random(7)
    for _ in range(5):
        shuffled = dataclasses.replace(
            snap,
            nodes=tuple(rng.sample(snap.nodes, len(snap.nodes))),
            orgs=tuple(rng.sample(snap.orgs, len(snap.orgs))),
            running=tuple(rng.sample(snap.running, len(snap.running))),
            pending=tuple(rng.sample(snap.pending, len(snap.pending))),
        )
        assert _decisions_key(decide(shuffled, 10)) == want


def test_estimated_starts() -> None:
    """RESERVED: the reservation's start; BACKOFF: eligible_at; RESERVED_FOR: the
    reservation it waits on, when one is known (reading: SEMANTICS.md names no estimate
    for other reasons, so only these are checked)."""
    snap = snapshot(
        rack("r0", 3),
        [org("a", h100=24)],
        [
            running("r1", on=["r0-n0"], acc=4, runtime=1000),
            running("r2", on=["r0-n1"], acc=6),
            running("r3", on=["r0-n2"], acc=6),
        ],
        [
            pending("g", submitted=1),
            pending("later", acc=4, submitted=2),
            pending("retry", acc=2, submitted=3, eligible_at=400),
        ],
    )
    d = decide(snap, 100)
    assert d.pending["g"].reason == PendingReason.RESERVED and d.pending["g"].estimated_start == 1000
    assert d.pending["retry"].reason == PendingReason.BACKOFF and d.pending["retry"].estimated_start == 400
    later = d.pending["later"]
    assert later.reason == PendingReason.RESERVED_FOR and later.blocked_by == "g"
    assert later.estimated_start in (None, 1000)
