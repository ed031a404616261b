"""``preempt``: a job that does not fit stops running jobs to make room, with one victim
search over both kinds of candidate: other orgs' borrowers (reclaim, for a job within its
org's guarantee) and its own org's lower-priority jobs (priority preemption). One search
over both finds the cheapest set; a reclaim pass and then a priority pass could not mix
the two. A job whose victims are still stopping keeps its claim on their room.

The helpers that keep the claims are the cycle's (``core/preempt.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quota.accounting import Verdict
from scheduler.core.actions.base import Action, Ask, Outcome
from scheduler.core.victims import Victim, find_victims
from values.decisions import PendingReason, Preemption

if TYPE_CHECKING:
    from scheduler.core.decide import Cycle

_FAIL = None


class Preempt(Action):
    name = "preempt"
    # Victims keep their nodes until they are gone, and their room is claimed for the
    # beneficiary: nothing is freed for later jobs in this cycle.
    frees_capacity = False

    def attempt(self, cycle: Cycle, ask: Ask) -> Outcome | None:
        job, shape = ask.job, ask.shape
        if job.id in cycle.stopping_for:
            cycle.reclaim_claim(job, shape)
            cycle.pend(job, PendingReason.PREEMPTING, "waiting for preempted jobs to stop")
            return Outcome.PREEMPTING
        org, q = job.spec.org, shape.replicas * shape.acc
        book, policy = cycle.book, cycle.policy
        for f, verdict in ask.verdicts:
            # Reclaim is for a job its guarantee covers: within nominal, or held up only by
            # the shared pool being lent out.
            reclaim = (
                policy.reclaim
                and verdict in (Verdict.NOMINAL, Verdict.LENDING)
                and book.within_nominal(org, f, q)
            )
            priority = policy.priority_preemption
            if not (reclaim or priority):
                continue
            key = ("victims", org, f, shape, job.priority, reclaim, job.spec.topology, job.avoid_nodes)
            if key in cycle.memo:
                continue
            found = find_victims(
                cycle.pool,
                book,
                job,
                f,
                shape,
                cycle.candidates(job, f, reclaim, priority),
                cycle.stopping,
                fit=cycle.fit_of(job),
                live=cycle.live,
                protected=cycle.protected,
            )
            if found is None:
                cycle.memo[key] = _FAIL
                continue
            victims, placement, released = found
            cycle.claim(job, f, shape, placement, released, [v.part for v in victims])
            for v in victims:
                cycle.stopping.add(v.job.id)
                cycle.live[(v.job.spec.org, f)] -= v.part.accelerators
                cycle.out.preemptions.append(
                    Preemption(
                        v.job.id,
                        v.reason,
                        job.id,
                        _message(v, job.id),
                        keep=v.keep,
                        resize_to=v.kept or None,
                    )
                )
            cycle.pend(job, PendingReason.PREEMPTING, f"{len(victims)} job(s) asked to stop to make room")
            return Outcome.PREEMPTING
        return None


def _message(v: Victim, beneficiary: str) -> str:
    if not v.keep:
        return f"makes room for {beneficiary} ({v.reason.value})"
    return (
        f"shrinks to {v.kept} of {v.job.replicas} replicas to make room for "
        f"{beneficiary} ({v.reason.value}); restarts from its checkpoint"
    )
