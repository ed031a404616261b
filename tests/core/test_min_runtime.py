"""A job that has not run its min_runtime yet is not stopped for reclaim, nor for a
priority unless the policy lets priority override; a move off a failing node overrides
it by default."""

from __future__ import annotations

import dataclasses

import pytest

from scheduler.config import parse_pool_config
from scheduler.core import decide
from scheduler.store.view import PoolView
from values.decisions import PreemptReason
from values.domain import JobSpec, PriorityClass
from values.errors import ConfigError
from values.snapshot import Policy, RunningJob

from .scenario import org, pending, rack, running, sick, snapshot

ONE = rack("r0", 1)
LENDER = [org("a", h100=8), org("b")]


def _young(r: RunningJob, seconds: float) -> RunningJob:
    return dataclasses.replace(r, min_runtime=seconds)


def _victims(snap, now: float) -> list[tuple[str, PreemptReason]]:  # type: ignore[no-untyped-def]
    return [(p.job_id, p.reason) for p in decide(snap, now).preemptions]


def test_a_borrower_is_reclaimed_only_once_it_ran_its_min_runtime() -> None:
    borrower = _young(running("b1", "b", on=["r0-n0"], started=0.0), 600.0)
    snap = snapshot(ONE, LENDER, [borrower], [pending("a1")])
    assert _victims(snap, 100.0) == []
    assert _victims(snap, 600.0) == [("b1", PreemptReason.RECLAIM)]


def test_a_higher_priority_waits_for_it_unless_the_policy_lets_priority_override() -> None:
    low = _young(running("low", "a", on=["r0-n0"], prio=100, started=0.0), 600.0)
    snap = snapshot(ONE, LENDER, [low], [pending("high", prio=1000)])
    assert _victims(snap, 100.0) == []
    overriding = Policy(min_runtime_yields_to=(PreemptReason.HEALTH, PreemptReason.PRIORITY))
    assert _victims(dataclasses.replace(snap, policy=overriding), 100.0) == [("low", PreemptReason.PRIORITY)]


def test_a_move_off_a_failing_node_overrides_it_by_default() -> None:
    young = _young(running("j", "a", on=["r0-n0"], started=0.0), 600.0)
    snap = snapshot([sick(ONE[0]), *rack("r1", 1)], LENDER, [young], [])
    assert _victims(snap, 100.0) == [("j", PreemptReason.HEALTH)]
    patient = Policy(min_runtime_yields_to=())
    assert _victims(dataclasses.replace(snap, policy=patient), 100.0) == []


def test_the_jobs_own_value_overrides_its_priority_class() -> None:
    view = PoolView(priority_classes=(PriorityClass(name="normal", value=500, min_runtime_seconds=900),))
    spec = {"name": "j", "org": "a", "gang": {"replicas": 1, "accelerators": 1, "flavor": "h100"}}
    assert view.min_runtime_of(JobSpec.model_validate(spec)) == 900
    assert view.min_runtime_of(JobSpec.model_validate({**spec, "min_runtime_seconds": 60})) == 60


def test_reclaim_cannot_be_let_override_it() -> None:
    text = "flavors: [{name: h100}]\norgs: [{name: a}]\npolicy: {min_runtime_yields_to: [health, reclaim]}\n"
    with pytest.raises(ConfigError) as caught:
        parse_pool_config(text)
    assert "policy.min_runtime_yields_to" in str(caught.value) and "reclaim always waits" in str(caught.value)
