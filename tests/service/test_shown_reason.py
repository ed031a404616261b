"""What a job shows is the truth: a job that can never run is refused at submit, and its
reason and message are why it is in its current state (a job that waited for capacity
and then ran, finished or was rejected shows no reason left from before)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scheduler.store import orgs as orgstore
from values.quotas import FlavorQuota

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


@pytest.mark.parametrize(
    ("gang", "words"),
    [
        ({"accelerators": 8, "replicas": 5}, "does not fit even an empty pool (never_fits)"),  # 40 of 32
        ({"accelerators": 12}, "does not fit even an empty pool (never_fits)"),  # no node has 12
        ({"accelerators": 8, "replicas": 3}, "may hold at most"),  # 24: beyond a's 16 + borrowing
    ],
)
def test_a_job_that_can_never_run_is_refused_at_submit(api: Api, gang: dict[str, Any], words: str) -> None:
    with api.ctx.db.write() as s:  # org a may borrow at most 4 above its 16
        orgstore.set_quota(s, "a", "h100", FlavorQuota(nominal=16, borrowing_limit=4), api.clock(), None)
    api.ctx.admission.refresh = 0.0
    resp = api.call(
        "member@a",
        "POST",
        "/v1/jobs",
        {"spec": {"name": "x", "org": "a", "gang": {"flavor": "h100", **gang}}},
    )
    assert resp.status_code == 422, resp.text
    assert resp.json()["errors"][0]["field"] == "spec.gang" and words in resp.json()["detail"]
    assert api.call("pool-admin", "GET", "/v1/jobs").json() == []


def test_a_job_that_fits_is_not_refused_while_nodes_are_down(api: Api) -> None:
    for node in ("h100-00", "h100-01", "h100-02", "h100-03"):
        assert api.call("pool-admin", "POST", f"/v1/nodes/{node}/cordon").status_code == 200
    api.ctx.admission.refresh = 0.0
    resp = api.call(
        "member@a",
        "POST",
        "/v1/jobs",
        {"spec": {"name": "x", "org": "a", "gang": {"flavor": "h100", "accelerators": 8}}},
    )
    assert resp.status_code == 201, resp.text


def test_a_rejected_job_shows_why(api: Api) -> None:
    api.ctx.admission.problem = lambda *_: None  # type: ignore[method-assign]  # as before the first node sync
    too_big = api.submit("member@a", gang={"flavor": "h100", "accelerators": 8, "replicas": 5})
    api.cycle()
    job = _job(api, too_big)
    assert job["state"] == "REJECTED"
    assert job["reason"] == "never_fits" and "does not fit even an empty pool" in job["message"]
