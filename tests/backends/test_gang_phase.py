"""The one gang-phase rule every backend reports through, as a scenario table.

Each row: what the replicas did (rank, node, state, exit code, when), whether and when
the pool asked for a stop, the time of the poll, and what the gang is then. The window
is 3 s throughout: a non-zero exit waits that long for a node loss to explain it.
"""

from __future__ import annotations

import pytest

from scheduler.backends.base import Phase
from scheduler.backends.gang_phase import Replica, ReplicaState, decided_at, exit_text, gang_phase

P, R, X, L = ReplicaState.PENDING, ReplicaState.RUNNING, ReplicaState.EXITED, ReplicaState.LOST
WINDOW = 3.0


def rep(rank: int, state: ReplicaState, code: int | None = None, at: float | None = None) -> Replica:
    return Replica(rank, f"n{rank}", state, exit_code=code, at=at, message="node lost" if state is L else "")


SCENARIOS = [
    # (what happened, replicas, stop requested at, now, phase, settled)
    ("nothing started yet", [rep(0, P), rep(1, P)], None, 1.0, Phase.STARTING, False),
    ("one of two started", [rep(0, R), rep(1, P)], None, 1.0, Phase.STARTING, False),
    ("all started", [rep(0, R), rep(1, R)], None, 1.0, Phase.RUNNING, False),
    ("one finished early, the other runs", [rep(0, X, 0, 5.0), rep(1, R)], None, 6.0, Phase.RUNNING, False),
    ("all exited 0", [rep(0, X, 0, 5.0), rep(1, X, 0, 7.0)], None, 8.0, Phase.SUCCEEDED, True),
    # the root-cause rule: a survivor's exit is held for the window
    ("a rank failed, inside the window", [rep(0, X, 1, 5.0), rep(1, R)], None, 7.9, Phase.RUNNING, False),
    ("a rank failed, the window passed", [rep(0, X, 1, 5.0), rep(1, R)], None, 8.0, Phase.FAILED, False),
    ("the peer's node is lost inside the window", [rep(0, X, 1, 5.0), rep(1, L, at=7.0)], None, 7.5,
     Phase.LOST, True),
    ("a loss seen after the failure was decided still reads LOST", [rep(0, X, 1, 5.0), rep(1, L, at=9.0)],
     None, 9.5, Phase.LOST, True),
    ("a loss while the others still run", [rep(0, R), rep(1, L, at=4.0)], None, 4.0, Phase.LOST, False),
    # stops: what the replicas exit with after the request says nothing about the job
    ("stop asked, one still running", [rep(0, X, 143, 9.0), rep(1, R)], 8.0, 9.5, Phase.STOPPING, False),
    ("stop asked, all exited (SIGTERM and a clean checkpoint exit)", [rep(0, X, 143, 9.0), rep(1, X, 0, 9.5)],
     8.0, 10.0, Phase.STOPPED, True),
    ("stop asked, all saved a checkpoint and exited 0", [rep(0, X, 0, 9.0), rep(1, X, 0, 9.5)], 8.0, 10.0,
     Phase.STOPPED, True),
    ("all exited 0 before the stop arrived", [rep(0, X, 0, 7.0), rep(1, X, 0, 7.5)], 8.0, 10.0,
     Phase.SUCCEEDED, True),
    ("stopped before it ever started", [rep(0, X, None, 8.1), rep(1, X, None, 8.1)], 8.0, 9.0,
     Phase.STOPPED, True),
]  # fmt: skip


@pytest.mark.parametrize(("what", "replicas", "stop_at", "now", "phase", "settled"), SCENARIOS,
                         ids=[s[0] for s in SCENARIOS])  # fmt: skip
def test_a_gang_phase_scenario(what, replicas, stop_at, now, phase, settled) -> None:
    judged = gang_phase(replicas, stop_requested_at=stop_at, now=now, window=WINDOW)
    assert (judged.phase, judged.settled) == (phase, settled), what


def test_the_failure_names_the_first_failing_rank_its_node_and_signal() -> None:
    replicas = [rep(0, X, 0, 1.0), rep(2, X, 137, 3.0), rep(1, X, 1, 4.0)]
    judged = gang_phase(replicas, stop_requested_at=None, now=10.0, window=WINDOW)
    assert (judged.phase, judged.exit_code, judged.node, judged.at) == (Phase.FAILED, 137, "n2", 3.0)
    assert judged.message == "rank 2: exit code 137 (killed by SIGKILL)"


def test_a_loss_names_the_lost_node_not_the_survivor_that_failed_first() -> None:
    replicas = [rep(0, X, 1, 5.0), rep(1, L, at=6.0)]
    judged = gang_phase(replicas, stop_requested_at=None, now=6.0, window=WINDOW)
    assert (judged.node, judged.message) == ("n1", "rank 1: node lost")


def test_the_loop_is_told_when_a_held_exit_becomes_a_failure() -> None:
    assert decided_at([rep(0, X, 1, 5.0), rep(1, X, 2, 4.0), rep(2, R)], WINDOW) == 7.0
    assert decided_at([rep(0, X, 0, 5.0), rep(1, R)], WINDOW) is None


@pytest.mark.parametrize(
    ("code", "text"),
    [(0, "exit code 0"), (2, "exit code 2"), (137, "exit code 137 (killed by SIGKILL)"),
     (-9, "exit code -9 (killed by SIGKILL)"), (None, "did not start"), (200, "exit code 200")],
)  # fmt: skip
def test_exit_codes_read_as_a_shell_reports_them(code, text) -> None:
    assert exit_text(code) == text
