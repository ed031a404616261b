"""The validation program's pingmesh step against real agent probe listeners on loopback
(the agent's own UDP echo and TCP listener): a node whose peers answer passes it; one whose
peers mostly do not answer fails it, naming them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from probe_listeners import free_port, probe_listeners  # tests/ is on sys.path (rootdir conftest)

from scheduler.validation_job import Failed, pingmesh


@pytest.fixture
def listeners() -> Iterator[list[int]]:
    with probe_listeners(2) as ports:
        yield ports


def test_peers_that_answer_pass_the_pingmesh(listeners: list[int]) -> None:
    targets = ",".join(f"n{i}=127.0.0.1:{port}" for i, port in enumerate(listeners))
    summary = pingmesh(targets, seconds=1.0, max_loss=0.02)
    assert set(summary) == {"n0", "n1"}
    for peer in summary.values():
        assert peer["sent"] >= 10 and peer["lost"] == 0 and peer["rtt_median"] < 0.05


def test_peers_that_mostly_do_not_answer_fail_it_by_name(listeners: list[int]) -> None:
    dead = [free_port(), free_port()]  # nothing listens: no echo, the connect is refused
    targets = ",".join(
        [f"up=127.0.0.1:{listeners[0]}", *(f"down{i}=127.0.0.1:{p}" for i, p in enumerate(dead))]
    )
    with pytest.raises(Failed, match=r"pingmesh: loss over 2% to 2 of 3 peers \(down0 100%, down1 100%\)"):
        pingmesh(targets, seconds=1.0, max_loss=0.02)
