"""What a job shows as its reason and message is why it is in its current state: a job
that waited for capacity and then ran, finished or was rejected shows no reason left
from before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .api_harness import Api, make_api


@pytest.fixture
def api(tmp_path: Path) -> Api:
    made = make_api(f"sqlite:///{tmp_path / 'pool.db'}")
    made.cycle()  # the loop learns the nodes (4 x 8 h100)
    return made


def _job(api: Api, job: dict[str, Any]) -> dict[str, Any]:
    return dict(api.call("pool-admin", "GET", f"/v1/jobs/{job['id']}").json())


def test_a_job_that_waited_for_capacity_shows_no_waiting_reason_once_it_runs(api: Api) -> None:
    whole = {"gang": {"flavor": "h100", "accelerators": 8, "replicas": 2}}
    first = api.submit("member@a", env={"SIM_DURATION": "10"}, **whole)
    second = api.submit("member@b", org="b", env={"SIM_DURATION": "10"}, **whole)
    api.clock.t += 1  # submitted after the others: it is the one that waits
    late = api.submit("member@a", env={"SIM_DURATION": "5"}, **whole)
    api.cycle()
    waiting = _job(api, late)
    assert (waiting["state"], bool(waiting["reason"])) == ("PENDING", True)
    assert {_job(api, j)["state"] for j in (first, second)} <= {"ADMITTED", "STARTING", "RUNNING"}
    api.cycle(11)  # both gangs finish; the late one is placed
    api.cycle(1)
    placed = _job(api, late)
    assert placed["state"] in ("ADMITTED", "STARTING", "RUNNING")
    assert (placed["reason"], placed["message"]) == (None, ""), placed
    api.cycle(6)
    api.cycle(1)
    done = _job(api, late)
    assert done["state"] == "SUCCEEDED" and done["reason"] == "exit", done


def test_a_rejected_job_shows_why(api: Api) -> None:
    too_big = api.submit("member@a", gang={"flavor": "h100", "accelerators": 8, "replicas": 5})
    api.cycle()
    job = _job(api, too_big)
    assert job["state"] == "REJECTED"
    assert job["reason"] == "never_fits" and "does not fit even an empty pool" in job["message"]
