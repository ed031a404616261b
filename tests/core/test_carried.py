"""The charged running set is carried between cycles (``scheduler/core/carried.py``): a
cycle that follows others must decide exactly what a first cycle on the same snapshot
decides, and its carried state must equal charging the snapshot from scratch."""

from __future__ import annotations

import dataclasses
import os
import random

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from scheduler.core import carried, decide
from scheduler.core.backfill import carried_releases, releases_of
from values.snapshot import Snapshot

from . import strategies as gen
from .scenario import apply, describe_snapshot, node, org, pending, running, snapshot
from .test_properties import _next_cycle

CARRY = settings(
    max_examples=int(os.environ.get("CORE_CARRY_EXAMPLES", "30")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def from_scratch(snap: Snapshot, now: float) -> object:
    carried.forget()
    try:
        return decide(snap, now)
    finally:
        carried.forget()


def assert_same_releases(got: carried.Charged, snap: Snapshot, now: float) -> None:
    """Backfill's release order read from the carried limits equals sorting them here."""
    assert got.ends is not None and got.by_flavor is not None and got.unlimited is not None
    for f, jobs in got.by_flavor.items():
        ids = sorted(jobs)
        skip = set(ids[:1])  # a victim of a claim: left out
        stopping = got.stopping | set(ids[1:2])  # one asked to stop in this cycle
        lazy, lazy_unknown = carried_releases(got.ends[f], jobs, got.unlimited[f], [], skip, stopping, now)
        running = [r for r in jobs.values() if r.id not in skip]
        sorted_, sorted_unknown = releases_of(running, stopping, now)
        assert lazy.first(lazy.total + 1) == sorted_.first(sorted_.total), f"release order on {f}"
        assert lazy.total == sorted_.total
        assert lazy_unknown() == sorted_unknown()


def assert_same_charge(snap: Snapshot, now: float = gen.NOW) -> None:
    got, want = carried.charged(snap), carried.charge_from_scratch(snap)
    if got.ends is not None:
        assert_same_releases(got, snap, now)
    if got.holdings is not None:
        want_holdings: dict[tuple[str, str], dict[str, tuple[float | None, int]]] = {}
        for f, jobs in want.running_by_flavor.items():
            for r in jobs:
                want_holdings.setdefault((r.spec.org, f), {})[r.id] = (r.expected_end, r.accelerators)
        assert {k: v for k, v in got.holdings.items() if v} == want_holdings
    assert (got.pool.free_acc, got.pool.free_cpu, got.pool.free_mem) == (
        want.pool.free_acc,
        want.pool.free_cpu,
        want.pool.free_mem,
    )
    assert (got.held, got.live, got.stopping) == (want.held, want.live, want.stopping)
    assert {b: set(v) for b, v in got.stopping_for.items()} == {
        b: set(v) for b, v in want.stopping_for.items()
    }
    assert {f: {r.id for r in v} for f, v in got.running_by_flavor.items()} == {
        f: {r.id for r in v} for f, v in want.running_by_flavor.items()
    }


@CARRY
@given(gen.any_snapshots, st.randoms(use_true_random=False), st.data())
def test_ten_cycles_decide_as_if_each_were_the_first(
    snap: Snapshot, rng: random.Random, data: st.DataObject
) -> None:
    carried.forget()
    now = gen.NOW
    for k in range(10):
        # Every other cycle rebuilds the carried orders in bulk (as after many arrivals).
        carried.BULK_AT = 0 if k % 2 else 64
        try:
            d = decide(snap, now)  # with what the cycles before carried
        finally:
            carried.BULK_AT = 64
        note(f"cycle {k}\n{describe_snapshot(snap, now)}")
        assert_same_charge(snap, now)
        assert d == from_scratch(snap, now), f"cycle {k}: the carried state changed a decision"
        decide(snap, now)  # the next cycle carries from this snapshot again
        snap = apply(snap, d, now)
        now += rng.choice((5.0, 30.0, 200.0, 1000.0))
        snap = _next_cycle(snap, now, rng, data, k)


def test_a_checkpoint_or_a_stop_request_updates_the_carried_job() -> None:
    nodes = [node("n1"), node("n2")]
    job = running("r1", "b", {"n1": 1}, acc=4, runtime=1000.0)
    orgs = [org("a", h100=8), org("b")]
    snap = snapshot(
        nodes, orgs, running=[job], pending=[pending("p1", "a", acc=8), pending("p2", "a", acc=8)]
    )
    carried.forget()
    decide(snap, 100.0)
    checkpointed = dataclasses.replace(job, last_checkpoint_at=50.0)
    later = dataclasses.replace(snap, running=(checkpointed,))
    assert decide(later, 200.0) == from_scratch(later, 200.0)
    decide(later, 200.0)
    stopping = dataclasses.replace(checkpointed, terminating=True, preempted_for="p1")
    last = dataclasses.replace(snap, running=(stopping,))
    assert decide(last, 300.0) == from_scratch(last, 300.0)
    assert_same_charge(last, 300.0)


def test_cpu_that_floats_cannot_add_exactly_is_charged_from_scratch() -> None:
    # 0.1 has no exact binary form: sums in another order could round differently.
    nodes = [node("n1"), node("n2")]
    job = running("r1", "a", {"n1": 1}, acc=4, cpu=0.1)
    snap = snapshot(nodes, [org("a", h100=8)], running=[job], pending=[pending("p1", "a", acc=4)])
    carried.forget()
    assert carried.carry_for(snap) is None
    assert carried.charged(snap).pool.free_cpu == carried.charge_from_scratch(snap).pool.free_cpu
    assert decide(snap, 10.0) == from_scratch(snap, 10.0)
