"""A replica that Ray's memory monitor killed is the job's own failure (category oom,
charged by its restart rules), not a lost replica: a lost one on a healthy node would
restart uncharged, forever, and blame the node. The death is read from the error Ray
raises for the replica's actor (its message, as Ray 2.x words it; the real one is
tests/ray/test_memory_monitor.py)."""

from __future__ import annotations

from ray.core.generated.common_pb2 import ActorDiedErrorContext
from ray.exceptions import ActorDiedError

from scheduler.backends.gang_phase import Phase, gang_phase
from scheduler.backends.ray.backend import OOM_EXIT, memory_monitor_kill
from scheduler.backends.ray.gang import Exit, Gang
from scheduler.failures import category_of
from values.restarts import FailureCategory

OOM_DEATH = (  # as Ray 2.x worded it in tests/ray/test_memory_monitor.py
    "1 worker(s) were killed due to the node running low on memory. Memory on the node (IP: "
    "127.0.0.1, ID: d9c04b07) was 1.46GB used / 23.54GB limit (0.062051)"
)


def died(message: str) -> ActorDiedError:
    return ActorDiedError(ActorDiedErrorContext(error_message=message, class_name="ReplicaProcess",
                                                actor_id=b"\x01" * 16))  # fmt: skip


def test_a_memory_monitor_kill_is_told_apart_from_other_actor_deaths() -> None:
    assert memory_monitor_kill(died(OOM_DEATH)) == (
        "killed by Ray's memory monitor: 1 worker(s) were killed due to the node running low on memory. "
        "Memory on the node (IP: 127.0.0.1, ID: d9c04b07) was 1.46GB used / 23.54GB limit (0.062051)"
    )
    assert memory_monitor_kill(died("The actor is dead because its owner has died.")) is None
    assert memory_monitor_kill(RuntimeError("connection reset")) is None


def test_the_gang_fails_as_the_jobs_own_oom() -> None:
    replicas = [[0, "n0", 0, 1, 0, []], [1, "n1", 0, 1, 1, []]]  # rank, node, local rank, ...
    record = {"job_id": "j", "attempt": 0, "flavor": "h100", "replicas": replicas, "node_ids": ["a", "b"],
              "launched_at": 0.0}  # fmt: skip
    g = Gang.from_record("j/0", record)
    why = memory_monitor_kill(died(OOM_DEATH))
    assert why is not None
    g.exits[1] = Exit(OOM_EXIT, 10.0, why)
    g.exits[0] = Exit(143, 11.0)  # the survivor, stopped
    verdict = gang_phase(g.observed(), stop_requested_at=None, now=100.0, window=5.0)
    assert verdict.phase is Phase.FAILED and verdict.node == "n1"
    assert verdict.message == f"rank 1: exit code 137 (killed by SIGKILL): {why}"
    assert category_of(verdict.exit_code, verdict.message) is FailureCategory.OOM
