"""What a waiting job's estimate rests on, told without naming jobs the reader may not
see: the reserved head gang says which release it waits for; a member of another org
reads "a job of another org" where a pool-admin reads the job's id."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.api.redact import HIDDEN
from scheduler.store import orgs as orgstore
from values.quotas import FlavorQuota

from .api_harness import Api, make_api

LONG = {"SIM_DURATION": "5000"}


@pytest.fixture
def api(tmp_path: Path) -> Api:
    made = make_api(f"sqlite:///{tmp_path / 'pool.db'}")
    with made.ctx.db.write() as s:
        orgstore.set_quota(s, "a", "h100", FlavorQuota(nominal=24), made.clock(), None)
        orgstore.set_quota(s, "b", "h100", FlavorQuota(nominal=8), made.clock(), None)
    made.cycle()  # the loop learns the nodes (4 x 8 h100)
    return made


def test_the_head_gang_waits_for_another_orgs_limit_without_learning_its_id(api: Api) -> None:
    # b borrows a's idle 8 with a job that may not be preempted: a's gang must wait for it.
    gang = {"flavor": "h100", "accelerators": 8, "replicas": 2}
    theirs = api.submit("member@b", org="b", gang=gang, env=LONG, preemptible=False, max_runtime_seconds=400)
    api.submit("member@a", gang={"flavor": "h100", "accelerators": 8}, env=LONG, max_runtime_seconds=1000)
    started = api.clock()
    api.cycle()
    api.clock.t += 1
    mine = api.submit("member@a", gang=gang, env=LONG)
    api.cycle()

    admin = api.call("pool-admin", "GET", f"/v1/jobs/{mine['id']}").json()
    assert admin["reason"] == "reserved" and admin["estimated_start"] == pytest.approx(started + 400, abs=2)
    assert f"at the latest when {theirs['id']} reaches its 400 s runtime limit" in admin["message"]

    for seen in (
        api.call("member@a", "GET", f"/v1/jobs/{mine['id']}").json(),
        next(j for j in api.call("member@a", "GET", "/v1/jobs").json() if j["id"] == mine["id"]),
        next(j for j in api.call("member@a", "GET", "/v1/queue").json() if j["id"] == mine["id"]),
    ):
        assert theirs["id"] not in seen["message"]
        assert f"at the latest when {HIDDEN} reaches its 400 s runtime limit" in seen["message"]
    events = api.call("member@a", "GET", f"/v1/jobs/{mine['id']}/events").json()
    assert not any(theirs["id"] in e["message"] for e in events)
