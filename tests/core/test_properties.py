"""Property tests: SEMANTICS.md's invariants on random consistent pools, one cycle and
many cycles, and determinism under reordered inputs.

Budget: ``max_examples=150`` by default (the file runs in well under a minute); set
``CORE_MAX_EXAMPLES=3000`` (and ``CORE_CYCLE_EXAMPLES`` for the 20-cycle test, default 40)
for a longer search.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import random

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from scheduler.core import decide
from values.domain import Health
from values.snapshot import Snapshot

from . import strategies as gen
from .invariants import check_invariants
from .scenario import apply, describe, describe_snapshot, expire, requeue
from .test_stories import _decisions_key

CORE = settings(
    max_examples=int(os.environ.get("CORE_MAX_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@CORE
@given(gen.any_snapshots)
def test_one_cycle_keeps_the_invariants(snap: Snapshot) -> None:
    d = decide(snap, gen.NOW)
    note(describe_snapshot(snap, gen.NOW))
    note(describe(d))
    check_invariants(snap, d, gen.NOW)


@CORE
@given(gen.any_snapshots, st.randoms(use_true_random=False))
def test_same_inputs_same_decisions(snap: Snapshot, rng: random.Random) -> None:
    before = copy.deepcopy(snap)
    d = decide(snap, gen.NOW)
    assert snap == before, "decide changed its input"
    assert decide(snap, gen.NOW) == d, "two calls on one snapshot differ"
    shuffled = dataclasses.replace(
        snap,
        nodes=tuple(rng.sample(snap.nodes, len(snap.nodes))),
        orgs=tuple(rng.sample(snap.orgs, len(snap.orgs))),
        running=tuple(rng.sample(snap.running, len(snap.running))),
        pending=tuple(rng.sample(snap.pending, len(snap.pending))),
    )
    assert _decisions_key(decide(shuffled, gen.NOW)) == _decisions_key(d), "input order changed decisions"


def _next_cycle(snap: Snapshot, now: float, rng: random.Random, data: st.DataObject, k: int) -> Snapshot:
    """Time passes: limits expire, some jobs finish, victims exit and are requeued with
    ``preempted_by``, a node may change health, new jobs arrive."""
    snap, _ = expire(snap, now)
    keep, back, freed_for = [], [], set()
    for r in snap.running:
        if r.terminating and rng.random() < 0.7:
            back.append(requeue(r, now, preempted_by=r.preempted_for))
            freed_for.add(r.preempted_for)
        elif not r.terminating and rng.random() < 0.1:
            continue  # finished
        else:
            keep.append(r)
    nodes = list(snap.nodes)
    if rng.random() < 0.2:
        i = rng.randrange(len(nodes))
        nodes[i] = nodes[i].model_copy(update={"health": rng.choice(list(Health))})
    # The loop marks a job whose victims have exited as nominated: it goes first next cycle.
    waiting = tuple(dataclasses.replace(j, nominated=j.nominated or j.id in freed_for) for j in snap.pending)
    snap = dataclasses.replace(snap, running=tuple(keep), nodes=tuple(nodes), pending=waiting)
    new = [data.draw(gen.pending_job(snap, f"n{k}-{i}", now=now)) for i in range(rng.randint(0, 2))]
    return dataclasses.replace(snap, pending=(*snap.pending, *back, *new))


@pytest.mark.slow
@settings(CORE, max_examples=int(os.environ.get("CORE_CYCLE_EXAMPLES", "40")))
@given(gen.any_snapshots, st.randoms(use_true_random=False), st.data())
def test_twenty_cycles_keep_the_invariants(snap: Snapshot, rng: random.Random, data: st.DataObject) -> None:
    now = gen.NOW
    for k in range(20):
        d = decide(snap, now)
        try:
            check_invariants(snap, d, now)
        except AssertionError:
            note(f"cycle {k}\n{describe_snapshot(snap, now)}\n{describe(d)}")
            raise
        snap = apply(snap, d, now)
        now += rng.choice((5.0, 30.0, 200.0, 1000.0))
        snap = _next_cycle(snap, now, rng, data, k)
