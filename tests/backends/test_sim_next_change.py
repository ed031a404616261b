"""The sim backend foresees each change of its gangs, so the loop wakes for it."""

from __future__ import annotations

from scheduler.backends.base import Launch
from scheduler.backends.sim import SimBackend
from values.domain import JobSpec, Node, TopologyPath

NODES = [Node(name=f"n-{i}", flavor="h100", accelerators=1, topology=TopologyPath(rack="r")) for i in (0, 1)]


def _launch(
    backend: SimBackend, job: str, now: float, duration: float, replicas: int = 1, exit_code: int = 0
) -> str:
    spec = JobSpec.model_validate(
        {
            "name": job,
            "org": "a",
            "gang": {"replicas": replicas, "accelerators": 1, "flavor": "h100"},
            "env": {"SIM_DURATION": str(duration), "SIM_EXIT_CODE": str(exit_code)},
        }
    )
    launch = Launch(job, 0, spec, "h100", tuple((n.name, 1) for n in NODES[:replicas]), {})
    backend.launch(launch, now)
    return launch.key


def test_an_idle_backend_foresees_nothing() -> None:
    assert SimBackend(NODES).next_change_at(0.0) is None


def test_the_next_change_is_the_start_then_the_earliest_natural_end() -> None:
    backend = SimBackend(NODES, start_delay=0.5)
    _launch(backend, "long", 10.0, duration=5.0)
    _launch(backend, "short", 11.0, duration=2.0)
    assert backend.next_change_at(10.0) == 10.5  # "long" comes up
    assert backend.next_change_at(10.6) == 11.5  # "short" comes up
    assert backend.next_change_at(12.0) == 13.0  # "short" ends
    assert backend.next_change_at(13.0) == 15.0  # "long" ends; "short" is done
    assert backend.next_change_at(15.0) is None


def test_a_stopped_gang_is_foreseen_to_exit_after_its_stop_delay() -> None:
    backend = SimBackend(NODES, stop_delay=3.0)
    key = _launch(backend, "j", 0.0, duration=100.0)
    backend.stop(key, 30.0, 1.0)
    assert backend.next_change_at(1.0) == 4.0  # min(grace 30, stop_delay 3) after the stop


def test_a_held_failure_is_foreseen_when_its_correlation_window_closes() -> None:
    backend = SimBackend(NODES, stop_delay=1.0, correlation_window=2.0)
    _launch(backend, "j", 0.0, duration=10.0, replicas=2, exit_code=1)
    assert backend.next_change_at(0.0) == 10.0  # rank 0 exits 1
    assert backend.next_change_at(10.0) == 11.0  # rank 1 follows stop_delay later
    assert backend.next_change_at(11.0) == 12.0  # rank 0's exit is judged the job's own
    assert backend.next_change_at(12.0) is None
