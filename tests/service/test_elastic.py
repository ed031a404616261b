"""Elastic gangs in the service (sim backend): a borrowing gang shrinks to its minimum
for a reclaim and comes back at once on the ranks it kept; once the room is idle again
it grows back to its most, its ranks kept; each resize is an event and a metric."""

from __future__ import annotations

import json

from scheduler.api.routes_jobs import resizes
from scheduler.metrics import Metrics
from scheduler.store import jobs as jobstore
from values.lifecycle import JobState
from values.snapshot import Policy

from .harness import Pool, nodes, orgs


class _Plain:
    def text(self, message: str) -> str:
        return message


def _on(pool: Pool, job: str) -> list[str]:
    with pool.db.read() as s:
        live = [a for a in jobstore.live_allocations(s) if a.job_id == job]
    return [n for a in live for n, _ in json.loads(a.assignments)]


def _settle(pool: Pool, *jobs: str) -> None:
    for _ in range(10):  # a stop takes up to the grace period (30 s)
        pool.cycle(5)
        if all(pool.state(j) is JobState.RUNNING for j in jobs):
            return
    raise AssertionError({j: pool.state(j) for j in jobs})


def test_a_borrowing_elastic_gang_shrinks_for_a_reclaim_and_grows_back(db_url: str) -> None:
    pool = Pool(db_url, node_list=nodes(4), org_list=orgs(a=16, b=0), policy=Policy(grow_after_seconds=120.0))
    pool.loop.metrics = Metrics()
    elastic = pool.submit("b", replicas=4, min_replicas=2, name="elastic", env={"SIM_DURATION": 99_999})
    _settle(pool, elastic)
    first = _on(pool, elastic)
    assert len(first) == 4  # its minimum borrows: it borrows for all it can

    owed = pool.submit("a", replicas=2, name="owed", env={"SIM_DURATION": 300})
    pool.cycle(1)
    row = pool.job(elastic)
    assert (row.state, row.reason) == ("PREEMPTED", "reclaim")
    assert row.message.startswith("shrinks to 2 of 4 replicas to make room for")
    _settle(pool, owed, elastic)
    assert pool.job(elastic).attempt == 1
    assert _on(pool, elastic) == first[:2]  # back at once on the ranks it kept
    assert sorted(_on(pool, owed)) == sorted(first[2:])
    with pool.db.read() as s:
        (requeue,) = [e for e in jobstore.events(s, elastic) if e.event == "requeue"]
    assert requeue.reason == "resized"
    assert not pool.job(elastic).expedite and pool.job(elastic).prefer_nodes == "[]"

    # The owed job ends; the room is idle and nobody waits for it: the gang, which ran
    # past grow_after_seconds, grows back to four on its two nodes and the two freed.
    pool.clock.t = pool.job(owed).started_at + 301.0  # type: ignore[operator]
    for _ in range(4):
        pool.cycle(30)
        if pool.job(elastic).attempt == 2:
            break
    _settle(pool, elastic)
    assert pool.state(owed) is JobState.SUCCEEDED
    grown = _on(pool, elastic)
    assert len(grown) == 4 and grown[:2] == first[:2]  # its ranks kept
    with pool.db.read() as s:
        preempts = [(e.reason, e.message) for e in jobstore.events(s, elastic) if e.event == "preempt"]
    assert [r for r, _ in preempts] == ["reclaim", "grow"]
    assert preempts[1][1].startswith("grows from 2 to 4 of 4 replicas")
    with pool.db.read() as s:  # what `jobs describe` lists as its resizes
        listed = resizes(jobstore.events(s, elastic), _Plain())
    assert [(r["attempt"], r["reason"]) for r in listed] == [(0, "reclaim"), (1, "grow")]
    assert pool.loop.metrics.resizes.labels("b", "shrink")._value.get() == 1
    assert pool.loop.metrics.resizes.labels("b", "grow")._value.get() == 1


def test_an_elastic_gang_does_not_grow_again_within_grow_after_seconds(db_url: str) -> None:
    # Room frees 60 s after the gang started at two: with grow_after 120 s it waits,
    # then grows.
    pool = Pool(db_url, node_list=nodes(4), org_list=orgs(a=32), policy=Policy(grow_after_seconds=120.0))
    filler = pool.submit("a", replicas=2, name="filler", env={"SIM_DURATION": 60})
    _settle(pool, filler)
    elastic = pool.submit("a", replicas=4, min_replicas=1, name="elastic", env={"SIM_DURATION": 99_999})
    _settle(pool, elastic)
    assert len(_on(pool, elastic)) == 2
    for _ in range(3):
        pool.cycle(30)
    assert pool.state(filler) is JobState.SUCCEEDED
    assert pool.job(elastic).attempt == 0  # not yet: it has run under 120 s
    for _ in range(4):
        pool.cycle(30)
    _settle(pool, elastic)
    assert pool.job(elastic).attempt == 1 and len(_on(pool, elastic)) == 4
