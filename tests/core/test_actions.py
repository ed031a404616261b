"""The cycle as named actions in the policy's order: what leaving one out or adding one
does, the failure memo kept valid by ``frees_capacity``, Tiresias' preemption as the
``least_attained`` action, and the queue order as a pure iterator."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest

from quota.accounting import QuotaBook
from scheduler.config import parse_pool_config
from scheduler.core import actions, decide
from scheduler.core.actions import Action, Ask, Outcome
from scheduler.core.decide import Cycle
from scheduler.core.ordering import QueueInputs, nominated_first
from values.decisions import PendingReason, PendingStatus, PreemptReason
from values.errors import ConfigError
from values.snapshot import DEFAULT_ACTIONS, Ordering, PendingJob, Policy, RunningJob, WithinOrg

from .scenario import org, pending, rack, running, snapshot

POOL2 = rack("r0", 2)
LENDER = [org("a", h100=16), org("b")]


def test_without_preempt_a_job_within_its_guarantee_waits_instead_of_reclaiming() -> None:
    snap = snapshot(
        POOL2, LENDER, [running("b1", "b", on=["r0-n0"]), running("b2", "b", on=["r0-n1"])], [pending("a1")]
    )
    assert [p.job_id for p in decide(snap, 0.0).preemptions] == ["b1"]
    no_preempt = dataclasses.replace(snap, policy=Policy(actions=("evacuate", "allocate", "reserve")))
    out = decide(no_preempt, 0.0)
    assert out.preemptions == []
    assert out.pending["a1"].reason is not PendingReason.PREEMPTING  # it waits (and reserves)


def test_without_reserve_the_blocked_gang_holds_nothing_and_a_later_job_takes_its_room() -> None:
    # Free 4 + 2 + 2 accelerators: "g" (1 x 8) fits on no node and reserves r0-n0 for when
    # r1 ends; "small" (1 x 4, no limit: it could delay g) may not take that room.
    three = rack("r0", 3)
    held = [
        running("r1", on=["r0-n0"], acc=4, runtime=1000),
        running("r2", on=["r0-n1"], acc=6),
        running("r3", on=["r0-n2"], acc=6),
    ]
    jobs = [pending("g", submitted=1), pending("small", acc=4, submitted=2)]
    snap = snapshot(three, [org("a", h100=24)], held, jobs)
    reserved = decide(snap, 100.0)
    assert [r.job_id for r in reserved.reservations] == ["g"]
    assert reserved.placements == []
    free = decide(
        dataclasses.replace(snap, policy=Policy(actions=("evacuate", "allocate", "preempt"))), 100.0
    )
    assert free.reservations == []
    assert [(p.job_id, p.assignments) for p in free.placements] == [("small", (("r0-n0", 1),))]


class Squeeze(Action):
    """A test action that makes room mid-walk: a job that did not fit stops ``r`` at once
    (as shrinking a gang would), and then waits anyway."""

    name = "squeeze"

    def __init__(self, frees: bool) -> None:
        self.frees = frees

    @property
    def frees_capacity(self) -> bool:  # type: ignore[override]
        return self.frees

    def attempt(self, cycle: Cycle, ask: Ask) -> Outcome | None:
        if "r" not in cycle.stopping:
            cycle.stopping.add("r")
            i = cycle.pool.index["r0-n0"]
            cycle.pool.take(i, -8, -1.0, -4.0)
            cycle.book.add("b", "h100", -8)
        return None


@pytest.mark.parametrize("declared", [True, False])
def test_room_made_mid_walk_is_seen_by_later_jobs_only_if_the_action_declares_it(
    monkeypatch: pytest.MonkeyPatch, declared: bool
) -> None:
    monkeypatch.setitem(actions.ACTIONS, "squeeze", Squeeze(declared))
    order = ("allocate", "squeeze", "reserve")
    jobs = [pending("j1", submitted=0.0), pending("j2", submitted=1.0)]
    snap = snapshot(
        rack("r0", 1), LENDER, [running("r", "b", on=["r0-n0"])], jobs, policy=Policy(actions=order)
    )
    out = decide(snap, 0.0)
    # j1 failed before the room appeared; j2 is the same kind of job. Declared, the walk
    # forgets j1's failure and j2 gets the node; undeclared, j2 is wrongly told it fails too.
    assert [p.job_id for p in out.placements] == (["j2"] if declared else [])


# -- least_attained (Tiresias' preemption) ----------------------------------------------

TIRESIAS = Policy(
    ordering=Ordering.PRIORITY,
    reclaim=False,
    priority_preemption=False,
    backfill=False,
    actions=(*DEFAULT_ACTIONS, "least_attained"),
)
QUEUE0, QUEUE1, QUEUE2 = 500, 499, 498  # a queue is passed to the core as a priority


def _served(r: RunningJob, service: float) -> RunningJob:
    return dataclasses.replace(r, service=service)


def test_a_newcomer_preempts_the_lowest_queue_and_there_the_most_served_job() -> None:
    running_jobs = [
        _served(running("q1", "b", on=["r0-n0"], prio=QUEUE1), 5_000.0),
        _served(running("q2-less", "b", on=["r0-n1"], prio=QUEUE2), 400_000.0),
        _served(running("q2-more", "b", on=["r0-n2"], prio=QUEUE2), 900_000.0),
    ]
    snap = snapshot(rack("r0", 3), LENDER, running_jobs, [pending("new", prio=QUEUE0)], policy=TIRESIAS)
    out = decide(snap, 100.0)
    assert [(p.job_id, p.reason, p.beneficiary) for p in out.preemptions] == [
        ("q2-more", PreemptReason.SERVICE, "new")
    ]
    assert out.pending["new"].reason is PendingReason.PREEMPTING


def test_jobs_of_the_same_queue_are_never_victims() -> None:
    running_jobs = [_served(running("peer", "b", on=["r0-n0"], prio=QUEUE1), 10_000.0)]
    snap = snapshot(rack("r0", 1), LENDER, running_jobs, [pending("new", prio=QUEUE1)], policy=TIRESIAS)
    out = decide(snap, 0.0)
    assert out.preemptions == []
    assert out.pending["new"].reason is PendingReason.CAPACITY


def test_nothing_is_preempted_when_all_lower_queues_together_would_not_make_room() -> None:
    running_jobs = [
        running("low", "b", on=["r0-n0"], prio=QUEUE2),
        running("peer", "b", on=["r0-n1"], prio=QUEUE0),
    ]
    gang = pending("gang", replicas=2, prio=QUEUE0)
    out = decide(snapshot(POOL2, LENDER, running_jobs, [gang], policy=TIRESIAS), 0.0)
    assert out.preemptions == []


def test_a_policy_without_least_attained_never_preempts_for_service() -> None:
    running_jobs = [running("low", "b", on=["r0-n0"], prio=QUEUE2)]
    plain = dataclasses.replace(TIRESIAS, actions=DEFAULT_ACTIONS)
    out = decide(
        snapshot(rack("r0", 1), LENDER, running_jobs, [pending("new", prio=QUEUE0)], policy=plain), 0.0
    )
    assert out.preemptions == []


# -- the policy's list --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("actions_yaml", "problem"),
    [("[allocate, bogus]", "unknown action 'bogus'"), ("[allocate, allocate]", "'allocate' is listed twice")],
)
def test_a_bad_action_list_names_the_field_and_the_problem(actions_yaml: str, problem: str) -> None:
    text = f"flavors: [{{name: h100}}]\norgs: [{{name: a}}]\npolicy: {{actions: {actions_yaml}}}\n"
    with pytest.raises(ConfigError) as caught:
        parse_pool_config(text)
    assert "policy.actions" in str(caught.value) and problem in str(caught.value)


# -- the queue order ----------------------------------------------------------------------


def test_the_queue_order_yields_every_job_once_and_writes_nothing() -> None:
    jobs = [pending(f"{o}{i}", o, submitted=float(i)) for o in ("a", "b") for i in range(5)]
    book = QuotaBook([org("a", h100=8), org("b", h100=8)], {"h100": 16})
    failed = PendingStatus(PendingReason.CAPACITY, "full")
    alike_asked: list[str] = []

    def failed_alike(queue: Sequence[PendingJob], start: int) -> list[PendingStatus]:
        run = []
        for job in queue[start:]:
            alike_asked.append(job.id)
            if not job.id.endswith(("2", "3")):
                break
            run.append(failed)
        return run

    inputs = QueueInputs(
        Ordering.FAIR, WithinOrg.AGE, 0.0, book, {}, {"a": 1.0, "b": 1.0}, 86_400.0, set(), failed_alike
    )
    turns = list(nominated_first(jobs, inputs))
    assert sorted(j.id for j, _ in turns) == sorted(j.id for j in jobs)
    # The runs of jobs that fail alike come with their status, right after the job before them.
    assert {j.id for j, status in turns if status is failed} == {"a2", "a3", "b2", "b3"}
    assert [j.id for j, _ in turns if j.id.startswith("a")] == [f"a{i}" for i in range(5)]
    assert alike_asked
    assert book.alloc("a", "h100") == book.alloc("b", "h100") == 0
