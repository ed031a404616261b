"""A job's checkpoints stay in its own folder: a path reported through the API or read by
a backend from the job's manifest is stored only inside ``<root>/<job id>``, and only such
a path becomes the next attempt's TRAINPOOL_RESUME_FROM."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest

from scheduler.backends.base import GangStatus
from scheduler.checkpoint_folder import job_folder
from scheduler.store.tables import CheckpointRow

from .api_harness import Api, make_api


@pytest.fixture
def api(tmp_path: Path) -> Api:
    return make_api(f"sqlite:///{tmp_path / 'pool.db'}", checkpoint_root=str(tmp_path / "checkpoints"))


def _root(api: Api) -> str:
    return api.ctx.checkpoint_root


def _report(api: Api, job: dict[str, Any], path: str, step: int = 1) -> Any:
    return api.call("member@a", "POST", f"/v1/jobs/{job['id']}/checkpoints", {"path": path, "step": step})


def _stored(api: Api, job_id: str) -> list[str]:
    return [c["path"] for c in api.call("pool-admin", "GET", f"/v1/jobs/{job_id}/checkpoints").json()]


def test_a_member_cannot_record_another_jobs_checkpoint_as_its_own(api: Api) -> None:
    mine = api.submit("member@a")
    theirs = api.submit("member@b", org="b")
    folder, other = job_folder(_root(api), mine["id"]), job_folder(_root(api), theirs["id"])
    for path in (
        f"{other}/step-9.pt",  # another org's job
        f"{folder}/../{theirs['id']}/step-9.pt",  # climbing out of its own
        f"{folder}-evil/step-9.pt",  # a sibling whose name starts with the job's
        "step-9.pt",  # relative: the pool would not know to what
        "/etc/passwd",
    ):
        resp = _report(api, mine, path)
        assert resp.status_code == 422, path
        assert resp.json()["errors"][0]["field"] == "path" and folder in resp.json()["detail"]
    assert _stored(api, mine["id"]) == []
    assert _report(api, mine, f"{folder}/step-1.pt").status_code == 201
    assert _stored(api, mine["id"]) == [f"{folder}/step-1.pt"]


def test_a_link_planted_in_the_folder_does_not_lead_out_of_it(api: Api) -> None:
    mine = api.submit("member@a")
    theirs = api.submit("member@b", org="b")
    folder, other = Path(job_folder(_root(api), mine["id"])), Path(job_folder(_root(api), theirs["id"]))
    folder.mkdir(parents=True)
    other.mkdir(parents=True)
    (other / "step-9.pt").write_bytes(b"their weights")
    os.symlink(other, folder / "borrowed")
    resp = _report(api, mine, str(folder / "borrowed" / "step-9.pt"))
    assert resp.status_code == 422 and "through a link" in resp.json()["detail"]


def _with_manifest(api: Api, path_of: Any) -> None:
    """The sim backend reports, for each gang, the checkpoint ``path_of(job_id)``: as the
    Ray backend reports what rank 0's manifest says."""
    backend = api.host.loop.backend
    original = backend.gangs

    def gangs(now: float) -> list[GangStatus]:
        return [dataclasses.replace(g, checkpoint=(5, path_of(g.job_id))) for g in original(now)]

    backend.gangs = gangs  # type: ignore[method-assign]


def _launch_envs(api: Api) -> list[dict[str, str]]:
    backend, launches = api.host.loop.backend, []
    original = backend.launch

    def spy(launch: Any, now: float) -> None:
        launches.append(dict(launch.env))
        original(launch, now)

    backend.launch = spy  # type: ignore[method-assign]
    return launches


@pytest.mark.parametrize("inside", [True, False])
def test_a_manifest_outside_the_folder_is_not_stored_nor_resumed_from(api: Api, inside: bool) -> None:
    victim = api.submit("member@b", org="b")
    victim_file = f"{job_folder(_root(api), victim['id'])}/step-9.pt"
    _with_manifest(
        api, lambda job_id: f"{job_folder(_root(api), job_id)}/step-5.pt" if inside else victim_file
    )
    launches = _launch_envs(api)
    job = api.submit(
        "member@a", env={"SIM_DURATION": "10", "SIM_FAIL_ATTEMPTS": "1"}, restart={"backoff_seconds": 0}
    )
    api.cycle()
    api.cycle(1)  # running: the backend shows its manifest
    api.cycle(11)  # attempt 0 fails, is requeued and relaunched
    api.cycle(1)
    mine = [env for env in launches if env["TRAINPOOL_JOB_ID"] == job["id"]]
    assert [env["TRAINPOOL_ATTEMPT"] for env in mine] == ["0", "1"]
    if inside:
        assert _stored(api, job["id"]) == [f"{job_folder(_root(api), job['id'])}/step-5.pt"]
        assert mine[1]["TRAINPOOL_RESUME_FROM"] == f"{job_folder(_root(api), job['id'])}/step-5.pt"
    else:
        assert _stored(api, job["id"]) == []
        assert "TRAINPOOL_RESUME_FROM" not in mine[1]


def test_a_path_stored_before_the_rule_is_not_handed_to_the_next_attempt(api: Api) -> None:
    victim = api.submit("member@b", org="b")
    launches = _launch_envs(api)
    job = api.submit(
        "member@a", env={"SIM_DURATION": "10", "SIM_FAIL_ATTEMPTS": "1"}, restart={"backoff_seconds": 0}
    )
    api.cycle()
    with api.ctx.db.write() as s:  # as an older server stored it
        path = f"{job_folder(_root(api), victim['id'])}/step-9.pt"
        s.add(CheckpointRow(job_id=job["id"], attempt=0, path=path, step=9, at=api.clock()))
    api.cycle(11)
    api.cycle(1)
    mine = [env for env in launches if env["TRAINPOOL_JOB_ID"] == job["id"]]
    assert len(mine) == 2 and "TRAINPOOL_RESUME_FROM" not in mine[1]


def test_a_root_reached_through_a_link_accepts_the_resolved_paths_the_sdk_reports(tmp_path: Path) -> None:
    (tmp_path / "disk").mkdir()
    os.symlink(tmp_path / "disk", tmp_path / "ckpt")
    api = make_api(f"sqlite:///{tmp_path / 'pool.db'}", checkpoint_root=str(tmp_path / "ckpt"))
    job = api.submit("member@a")
    resolved = tmp_path / "disk" / job["id"] / "step-1.pt"
    resolved.parent.mkdir()
    assert _report(api, job, str(resolved)).status_code == 201
