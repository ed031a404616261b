"""The claims of preemption beneficiaries on the cycle's working state: the candidates a
victim search may take, in victim order, and a beneficiary's claim on its victims' room,
treated as granted for the rest of the cycle (the ``preempt`` action searches).

A mixin of ``Cycle`` (``decide.py``): it works on the cycle's working state.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Iterator

from scheduler.core.pool import Shape
from scheduler.core.state import CycleState
from scheduler.core.victims import victim_class, victim_tail
from values.snapshot import PendingJob, RunningJob

Extra = dict[int, tuple[int, float, float]]
_FAIL = None


def _first(e: tuple[tuple[object, ...], RunningJob]) -> tuple[object, ...]:
    return e[0]


def _keyed(
    first: int, tails: list[tuple[object, ...]], jobs: dict[str, RunningJob]
) -> Iterator[tuple[tuple[object, ...], RunningJob]]:
    """An org's candidates with their full victim order key, made only as they are read."""
    for tail in tails:
        yield (first, *tail), jobs[tail[-1]]  # type: ignore[index]


class PreemptSteps(CycleState):
    def claim(
        self,
        job: PendingJob,
        f: str,
        shape: Shape,
        placement: list[tuple[int, int]],
        released: Extra,
        victims: list[RunningJob],
    ) -> None:
        """Treat the beneficiary's claim as granted for the rest of the cycle: hold what is
        free now on its future nodes, and book quota as it will be once the victims are
        gone (it charged, they credited), so no later job spends what it was promised."""
        self.claims.setdefault(f, []).append((job.id, self.pool.hold(placement, shape, released)))
        self.victims_of_claims.update(v.id for v in victims)
        self.promise(job.spec.org, f, shape.replicas * shape.acc)
        for v in victims:
            self.promise(v.spec.org, f, -v.accelerators)

    def reclaim_claim(self, job: PendingJob, shape: Shape) -> None:
        """Renew, in this cycle, the claim of a job whose victims are still stopping."""
        victims = sorted(
            (r for r in self.snap.running if r.preempted_for == job.id and r.terminating), key=lambda r: r.id
        )
        f = victims[0].flavor if victims else None
        if f is None or f not in job.spec.gang.flavors or f not in self.book.capacity:
            return
        released = self.pool.release_of([v for v in victims if v.flavor == f])
        placement = self.pool.place(f, shape, self.fit_of(job), extra=released)
        if placement is not None:
            # Nodes only: the quota the victims hold is still theirs in this snapshot, and
            # the order already puts this job first.
            self.claims.setdefault(f, []).append((job.id, self.pool.hold(placement, shape, released)))
            self.victims_of_claims.update(v.id for v in victims)

    def rank(self, f: str) -> tuple[dict[str, list[tuple[object, ...]]], dict[str, RunningJob]]:
        """Running jobs that may be victims on ``f``, per org, ranked by their own facts."""
        by_org: dict[str, list[tuple[object, ...]]] = {}
        jobs: dict[str, RunningJob] = {}
        for r in self.running_by_flavor.get(f, []):
            if r.spec.preemptible and not r.terminating:
                by_org.setdefault(r.spec.org, []).append(victim_tail(r))
                jobs[r.id] = r
        for lst in by_org.values():
            lst.sort()  # tails end with the job id: no ties
        return by_org, jobs

    def candidates(
        self, job: PendingJob, f: str, reclaim: bool, priority: bool
    ) -> Iterator[tuple[tuple[object, ...], RunningJob]]:
        """Possible victims on ``f`` in victim order, lazily merged from per-org lists."""
        if f not in self._candidates:
            # Victim order is (borrowing?, then the job's own facts): the first part is the
            # same for all of an org's jobs and is decided here, on this cycle's book; the
            # org's jobs ranked by the rest come carried between cycles when they can.
            if self.ranked is not None and self.running_jobs is not None:
                ranked, jobs = self.ranked.get(f, {}), self.running_jobs
            else:
                ranked, jobs = self.rank(f)
            self._candidates[f] = {
                org: (victim_class(self.book, org, f), lst, jobs) for org, lst in ranked.items() if lst
            }
        groups = self._candidates[f]
        org = job.spec.org
        streams: list[Iterable[tuple[tuple[object, ...], RunningJob]]] = []
        if priority and org in groups:
            # An org's own list is ordered by priority: the lower-priority ones lead it.
            streams.append(itertools.takewhile(lambda e: e[1].priority < job.priority, _keyed(*groups[org])))
        if reclaim:
            streams += [
                _keyed(*group)
                for o, group in groups.items()
                if o != org and self.book.above_nominal(o, f, self.live.get((o, f), 0))
            ]
        return heapq.merge(*streams, key=_first)

    def promise(self, org: str, f: str, q: int) -> None:
        """Book quota as it will be once victims are gone (not what orgs hold now)."""
        self.book.add(org, f, q)
        self.promised[(org, f)] = self.promised.get((org, f), 0) + q
