"""The sim backend's persistence costs O(changes): a journal of changes, compacted, replayed."""

from __future__ import annotations

import json
from pathlib import Path

from scheduler.backends import sim
from scheduler.backends.base import Launch
from scheduler.backends.sim import SimBackend
from values.domain import Health, JobSpec, Node, TopologyPath


def _nodes(count: int) -> list[Node]:
    return [
        Node(name=f"n-{i:03d}", flavor="h100", accelerators=1, topology=TopologyPath(rack="r"))
        for i in range(count)
    ]


SPEC = JobSpec.model_validate(
    {"name": "j", "org": "a", "gang": {"replicas": 1, "accelerators": 1, "flavor": "h100"}, "env": {}}
)


def _launch(backend: SimBackend, i: int, now: float, nodes: int) -> str:
    launch = Launch(f"job-{i}", 0, SPEC, "h100", ((f"n-{i % nodes:03d}", 1),), {})
    backend.launch(launch, now)
    return launch.key


def _journal(backend: SimBackend) -> sim._Journal:
    assert backend._journal is not None
    return backend._journal


def _bytes_of_one_launch(live: int, tmp_path: Path) -> int:
    backend = SimBackend(_nodes(live + 1), default_duration=1000, state_path=tmp_path / f"{live}" / "s.json")
    for i in range(live):
        _launch(backend, i, float(i), live + 1)
    before = _journal(backend).bytes_written
    _launch(backend, live, float(live), live + 1)
    return _journal(backend).bytes_written - before


def test_a_launch_writes_the_same_bytes_whatever_the_number_of_live_gangs(tmp_path: Path) -> None:
    few, many = _bytes_of_one_launch(10, tmp_path), _bytes_of_one_launch(800, tmp_path)
    assert 0 < many < 1000
    assert abs(many - few) <= 16  # a longer key or node name, not another gang's record


def test_launching_n_gangs_writes_o_1_bytes_per_launch_compactions_included(tmp_path: Path) -> None:
    n = 3000
    backend = SimBackend(_nodes(100), default_duration=0.5, state_path=tmp_path / "s.json")
    for i in range(n):
        key = _launch(backend, i, float(i), 100)
        backend.stop(key, 0.0, float(i))
        backend.forget(key)
    assert _journal(backend).bytes_written / n < 3000  # the old whole-file rewrite: ~100 kB each
    assert _journal(backend).records < sim._COMPACT_FACTOR * (sim._ARCHIVE + 1) + sim._COMPACT_SLACK + 1


def test_a_replay_after_compaction_reproduces_the_same_gangs(tmp_path: Path) -> None:
    state = tmp_path / "s.json"
    backend = SimBackend(_nodes(50), default_duration=100, state_path=state)
    keys = [_launch(backend, i, float(i), 50) for i in range(40)]
    for key in keys[:10]:
        backend.stop(key, 5.0, 41.0)
    for key in keys[10:15]:
        backend.forget(key)
    backend.set_health("n-020", Health.UNHEALTHY, 42.0)
    backend._compact()
    assert _journal(backend).records == 1
    more = [_launch(backend, 100 + i, 50.0 + i, 50) for i in range(5)]
    backend.stop(more[0], 0.0, 60.0)
    backend.forget(keys[15])
    backend.set_health("n-020", Health.HEALTHY, 61.0)

    replayed = SimBackend(_nodes(50), default_duration=100, state_path=state)
    for now in (0.0, 45.0, 70.0, 200.0):
        assert replayed.gangs(now) == backend.gangs(now)
    assert (replayed.launches, replayed.overcommits) == (backend.launches, backend.overcommits) == (45, 0)
    assert replayed.inventory(70.0) == backend.inventory(70.0)
    for key in (keys[0], keys[12], keys[20], more[0]):
        assert replayed.logs(key, 10, 70.0) == backend.logs(key, 10, 70.0)
    head = json.loads(state.read_text())
    assert (head["launches"], head["overcommits"]) == (45, 0)


def test_a_running_backend_replays_what_another_process_wrote(tmp_path: Path) -> None:
    state = tmp_path / "s.json"
    old = SimBackend(_nodes(4), default_duration=100, state_path=state)
    _launch(old, 0, 0.0, 4)
    new = SimBackend(_nodes(4), default_duration=100, state_path=state)  # a new leader
    _launch(new, 1, 1.0, 4)
    new._compact()  # a new inode
    _launch(new, 2, 2.0, 4)
    old.inventory(3.0)
    assert [g.key for g in old.gangs(3.0)] == [g.key for g in new.gangs(3.0)] and old.launches == 3
    _launch(old, 3, 3.0, 4)  # appended to the same inode: a size the other did not write
    new.inventory(4.0)
    assert len(new.gangs(4.0)) == 4 and new.launches == 4


def test_a_torn_last_line_is_dropped_and_the_journal_stays_appendable(tmp_path: Path) -> None:
    state = tmp_path / "s.json"
    backend = SimBackend(_nodes(4), default_duration=100, state_path=state)
    _launch(backend, 0, 0.0, 4)
    _launch(backend, 1, 1.0, 4)
    journal = _journal(backend).path
    journal.write_bytes(journal.read_bytes()[:-20])  # killed mid-write
    replayed = SimBackend(_nodes(4), default_duration=100, state_path=state)
    assert [g.key for g in replayed.gangs(2.0)] == [backend.gangs(2.0)[0].key]
    _launch(replayed, 2, 2.0, 4)
    again = SimBackend(_nodes(4), default_duration=100, state_path=state)
    assert len(again.gangs(3.0)) == 2 and again.launches == 2


def test_a_state_file_of_the_older_kind_is_read(tmp_path: Path) -> None:
    state = tmp_path / "s.json"
    gang = {
        "key": "old/0", "job_id": "old", "attempt": 0, "nodes": ["n-000"], "launched_at": 0.0,
        "duration": 100.0, "exit_code": 0, "start_delay": 0.0, "held": {"n-000": 1},
    }  # fmt: skip
    state.write_text(json.dumps({"gangs": [gang], "launches": 7, "overcommits": 0, "health": {}}))
    backend = SimBackend(_nodes(2), state_path=state)
    assert [g.key for g in backend.gangs(1.0)] == ["old/0"] and backend.launches == 7
    again = SimBackend(_nodes(2), state_path=state)
    assert [g.key for g in again.gangs(1.0)] == ["old/0"] and again.launches == 7
