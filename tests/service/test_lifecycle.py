"""The job lifecycle: the happy path, the requeue loops, and refusals of illegal moves."""

from __future__ import annotations

import pytest

from values.lifecycle import (
    TERMINAL,
    TRANSITIONS,
    IllegalTransition,
    JobEvent,
    JobState,
    can,
    transition,
)


def run(state: JobState, *events: JobEvent) -> JobState:
    for event in events:
        state = transition(state, event)
    return state


def test_a_job_runs_to_success() -> None:
    final = run(JobState.PENDING, JobEvent.ADMIT, JobEvent.LAUNCHED, JobEvent.STARTED, JobEvent.SUCCEEDED)
    assert final is JobState.SUCCEEDED


def test_a_preempted_job_goes_back_to_the_queue() -> None:
    state = run(JobState.PENDING, JobEvent.ADMIT, JobEvent.LAUNCHED, JobEvent.STARTED, JobEvent.PREEMPT)
    assert state is JobState.PREEMPTED
    assert transition(state, JobEvent.REQUEUE) is JobState.PENDING


def test_a_failed_job_with_restarts_left_is_requeued() -> None:
    state = run(JobState.RUNNING, JobEvent.RESTART)
    assert state is JobState.RESTARTING
    assert transition(state, JobEvent.REQUEUE) is JobState.PENDING


def test_terminal_states_have_no_way_out() -> None:
    for state in TERMINAL:
        for event in JobEvent:
            assert not can(state, event)
            with pytest.raises(IllegalTransition):
                transition(state, event)


def test_an_illegal_move_names_the_state_event_and_alternatives() -> None:
    with pytest.raises(IllegalTransition) as err:
        transition(JobState.PENDING, JobEvent.STARTED)
    assert err.value.state is JobState.PENDING
    assert "started" in str(err.value) and "PENDING" in str(err.value)
    assert "admit" in str(err.value)


def test_a_pending_job_cannot_be_preempted_or_succeed() -> None:
    for event in (JobEvent.PREEMPT, JobEvent.SUCCEEDED, JobEvent.FAILED, JobEvent.REQUEUE):
        assert not can(JobState.PENDING, event)


def test_every_non_terminal_state_can_be_cancelled() -> None:
    for state in JobState:
        if state not in TERMINAL:
            assert transition(state, JobEvent.CANCEL) is JobState.CANCELLED


def test_every_state_is_reachable_from_pending() -> None:
    seen = {JobState.PENDING}
    frontier = [JobState.PENDING]
    while frontier:
        state = frontier.pop()
        for (src, _event), dst in TRANSITIONS.items():
            if src == state and dst not in seen:
                seen.add(dst)
                frontier.append(dst)
    assert seen == set(JobState)
