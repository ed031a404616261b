"""``allocate``: place the job now, within its org's guarantee first, then on borrowed
quota, on any flavor it accepts; on capacity a reservation holds, only if it ends before
the reservation starts (EASY backfill).

An elastic gang is placed at the largest size in [min_replicas, replicas] that fits now
on the same terms as its minimum: within its org's guarantee where its minimum is (it
does not borrow for extra replicas, which would make the whole gang a reclaim victim),
borrowing where its minimum must; never on held capacity beyond its minimum. Room and
quota only shrink as the size grows, so the largest size is found by bisection."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quota.accounting import Verdict
from scheduler.core.actions.base import Action, Ask, Outcome
from scheduler.core.backfill import Hold
from scheduler.core.pool import Shape, largest_size
from scheduler.core.state import shape_of
from values.decisions import Placement, PlaceReason
from values.snapshot import PendingJob, RunningJob

if TYPE_CHECKING:
    from scheduler.core.decide import Cycle

_FAIL = None


class Allocate(Action):
    name = "allocate"
    frees_capacity = False

    def attempt(self, cycle: Cycle, ask: Ask) -> Outcome | None:
        job = ask.job
        for want in (Verdict.NOMINAL, Verdict.BORROWED):
            for f, verdict in ask.verdicts:
                if verdict is not want:
                    continue
                if want is Verdict.BORROWED:
                    blocker = cycle.blocked_in_org(job, f)
                    if blocker is not None:
                        ask.blocked_by = ask.blocked_by or blocker
                        continue
                if self.place(cycle, job, f, ask.shape, verdict):
                    return Outcome.PLACED
                ask.capacity_fail = ask.capacity_fail or f
        q = job.spec.gang.least_accelerators
        for f, verdict in ask.verdicts:
            # The shared pool is used up because the nodes are full, not because lending
            # limits bind: the job waits for nodes, and may reserve them like any gang.
            if verdict is Verdict.LENDING and cycle.pool.free_total(f) < q:
                ask.capacity_fail = ask.capacity_fail or f
        return None

    def place(self, cycle: Cycle, job: PendingJob, f: str, shape: Shape, verdict: Verdict) -> bool:
        fit, prefer = cycle.fit_of(job), job.prefer_nodes
        if job.spec.gang.elastic:
            larger = self.largest(cycle, job, f, verdict)
            if larger is not None:
                k, on = larger
                verdict = cycle.book.check(job.spec.org, f, k * shape.acc)
                self.placed(cycle, job, f, self.commit(cycle, job, f, shape_of(job, k), on, None), verdict)
                return True
        key = ("place", f, shape, fit)  # where a gang is preferred does not change whether it fits
        nodes = None if key in cycle.memo else cycle.pool.place(f, shape, fit, prefer=prefer)
        hold = cycle.holds.get(f)
        backfill = False
        if nodes is None:
            cycle.memo[key] = _FAIL
            if hold is not None and cycle.ends_before(job, hold.start_at):
                nodes = cycle.pool.place(f, shape, fit, extra=hold.held, prefer=prefer)
                backfill = nodes is not None
            if nodes is None:
                return False
        assignments = self.commit(cycle, job, f, shape, nodes, hold if backfill else None)
        self.placed(cycle, job, f, assignments, verdict, backfill)
        return True

    @staticmethod
    def largest(
        cycle: Cycle, job: PendingJob, f: str, verdict: Verdict
    ) -> tuple[int, list[tuple[int, int]]] | None:
        """The largest size above the elastic gang's minimum that fits on ``f`` now on
        its minimum's quota terms, and its nodes; None: only the minimum may fit."""
        g, org = job.spec.gang, job.spec.org
        allowed = (Verdict.NOMINAL,) if verdict is Verdict.NOMINAL else (Verdict.NOMINAL, Verdict.BORROWED)
        fit, prefer, book, pool = cycle.fit_of(job), job.prefer_nodes, cycle.book, cycle.pool

        def probe(k: int) -> list[tuple[int, int]] | None:
            if book.check(org, f, k * g.accelerators) not in allowed:
                return None
            return pool.place(f, shape_of(job, k), fit, prefer=prefer)

        return largest_size(g.least + 1, min(g.replicas, job.resize_to or g.replicas), probe)

    @staticmethod
    def placed(
        cycle: Cycle,
        job: PendingJob,
        f: str,
        assignments: tuple[tuple[str, int], ...],
        verdict: Verdict,
        backfill: bool = False,
    ) -> None:
        if backfill:
            reason = PlaceReason.BACKFILL
        else:
            reason = PlaceReason.NOMINAL if verdict is Verdict.NOMINAL else PlaceReason.BORROWED
        org = job.spec.org
        borrowed = cycle.book.borrowed(org, f, cycle.promised.get((org, f), 0))
        cycle.out.placements.append(Placement(job.id, f, assignments, reason, borrowed))

    @staticmethod
    def commit(
        cycle: Cycle, job: PendingJob, f: str, s: Shape, nodes: list[tuple[int, int]], hold: Hold | None
    ) -> tuple[tuple[str, int], ...]:
        pool = cycle.pool
        for i, n in nodes:
            a, c, m = n * s.acc, n * s.cpu, n * s.mem
            if hold is not None and i in hold.held:
                # A backfilled job may run on held capacity: it ends before the gang starts.
                ha, hc, hm = hold.held[i]
                ua, uc, um = (
                    max(0, a - max(0, pool.free_acc[i])),
                    max(0.0, c - max(0.0, pool.free_cpu[i])),
                    max(0.0, m - max(0.0, pool.free_mem[i])),
                )
                ua, uc, um = min(ua, ha), min(uc, hc), min(um, hm)
                hold.held[i] = (ha - ua, hc - uc, hm - um)
                a, c, m = a - ua, c - uc, m - um
            pool.take(i, a, c, m)
        cycle.book.add(job.spec.org, f, s.replicas * s.acc)
        assignments = tuple((pool.names[i], n) for i, n in nodes)
        cycle.placed_by_flavor[f].append(
            RunningJob(
                job.id,
                job.spec,
                job.priority,
                job.submitted_at,
                cycle.now,
                f,
                assignments,
                service=job.service,
            )
        )
        return assignments
