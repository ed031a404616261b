"""Expedited requeue in the service (sim backend): a gang that loses a node goes back
ahead of an older job of its org, and onto the node it still had."""

from __future__ import annotations

import json

from scheduler.store import jobs as jobstore
from values.domain import Health
from values.lifecycle import JobState
from values.snapshot import Policy

from .harness import Pool, nodes, orgs


def _nodes_of(pool: Pool, job: str) -> list[str]:
    with pool.db.read() as s:
        live = [a for a in jobstore.live_allocations(s) if a.job_id == job]
    return [n for a in live for n, _ in json.loads(a.assignments)]


def test_a_gang_that_loses_a_node_goes_first_and_back_onto_its_surviving_node(db_url: str) -> None:
    # Six nodes, six one-node fillers. `older` (3 nodes) waits; `gang` (2 nodes), submitted
    # after it, takes the two nodes that free first. At 50 s one of the gang's nodes dies
    # just as two fillers end: three nodes are free, room for one of the two. The gang,
    # not its fault, goes first, onto its surviving node and one freed beside it; by age
    # `older` would have taken all three, and by best fit the gang the two freed ones.
    pool = Pool(db_url, node_list=nodes(6), org_list=orgs(a=48), policy=Policy(backfill=False))
    fillers = [
        pool.submit(env={"SIM_DURATION": d}, name=f"f{i}") for i, d in enumerate([50, 50, 999, 999, 10, 10])
    ]
    pool.cycle()
    on = [_nodes_of(pool, f)[0] for f in fillers]
    older = pool.submit(replicas=3, name="older")
    pool.cycle(1)
    pool.clock.t += 9.5
    gang = pool.submit(replicas=2, name="gang")
    pool.cycle(0.5)
    assert pool.state(older) is JobState.PENDING
    assert sorted(_nodes_of(pool, gang)) == sorted(on[4:])
    pool.cycle(1)
    assert pool.state(gang) is JobState.RUNNING
    lost, survivor = sorted(_nodes_of(pool, gang))
    freed = on[:2]
    assert survivor > max(freed)  # so best fit alone would not pick it
    pool.clock.t = pool.job(fillers[0]).started_at + 50.5  # type: ignore[operator]
    pool.backend.set_health(lost, Health.UNHEALTHY, pool.clock())
    pool.cycle()
    row = pool.job(gang)
    assert (row.state, row.attempt, row.restarts, row.failure_class) == ("STARTING", 1, 0, "infrastructure")
    placed = _nodes_of(pool, gang)
    assert placed[0] == survivor and placed[1] in freed, placed  # rank 0 stays where it was
    assert pool.state(older) is JobState.PENDING
    assert not row.expedite and row.prefer_nodes == "[]"  # cleared on admission
    with pool.db.read() as s:
        (requeue,) = [e for e in jobstore.events(s, gang) if e.event == "requeue"]
    assert requeue.reason == "expedited"
    assert requeue.message == (
        f"requeued at the head of its org's queue after an infrastructure failure; its nodes {survivor} "
        "are offered first"
    )
