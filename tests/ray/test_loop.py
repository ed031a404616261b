"""The real control loop on the ray backend: a submitted gang is placed, runs on Ray,
reports a checkpoint and succeeds; the store follows it the whole way."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlmodel import select

from quota.model import FlavorQuota, Org
from scheduler.apply import ApplyOptions
from scheduler.domain import Flavor, JobSpec
from scheduler.lifecycle import JobState
from scheduler.loop import ControlLoop, LoopSettings
from scheduler.store import jobs as jobstore
from scheduler.store import orgs as orgstore
from scheduler.store.db import open_database
from scheduler.store.tables import CheckpointRow
from scheduler.store.view import PoolView

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TRAIN = """
import json, os, time
if os.environ["RANK"] == "0":
    folder = os.environ["TRAINPOOL_CHECKPOINT_DIR"]
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, ".tmp"), "w") as f:
        json.dump({"step": 5, "path": os.path.join(folder, "step-5"), "at": time.time()}, f)
    os.replace(os.path.join(folder, ".tmp"), os.path.join(folder, "trainpool-checkpoint.json"))
time.sleep(2)
"""


def test_a_gang_submitted_to_the_store_runs_on_ray_and_succeeds(
    make_backend: Callable[..., object], tmp_path: Path
) -> None:
    backend = make_backend()
    db = open_database(f"sqlite:///{tmp_path / 'pool.db'}")
    with db.write() as s:
        orgstore.seed_from_config(s, (Org(name="a", quotas={"h100": FlavorQuota(nominal=16)}),), time.time())
    ckpt = tmp_path / "ckpt"
    settings = LoopSettings(holder="ray-test", lease_ttl=30.0, apply=ApplyOptions(checkpoint_root=str(ckpt)))
    loop = ControlLoop(db, backend, PoolView(flavors=(Flavor(name="h100"),)), settings=settings)  # type: ignore[arg-type]
    spec = JobSpec.model_validate(
        {"name": "train", "org": "a", "gang": {"replicas": 2, "accelerators": 4, "flavor": "h100"},
         "command": ["python", "-c", TRAIN]}
    )  # fmt: skip
    with db.write() as s:
        job = jobstore.submit(
            s, spec, priority=500, now=time.time(), submitted_by=None, client_request_id=None
        )
    job_id = job.job.id

    seen: list[JobState] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        loop.cycle()
        with db.read() as s:
            state = JobState(jobstore.get(s, job_id).state)
        if not seen or seen[-1] is not state:
            seen.append(state)
        if state in (JobState.SUCCEEDED, JobState.FAILED):
            break
        time.sleep(0.2)
    assert seen[-1] is JobState.SUCCEEDED, seen
    assert JobState.RUNNING in seen
    with db.read() as s:
        events = [e.event for e in jobstore.events(s, job_id)]
        checkpoints = s.exec(select(CheckpointRow).where(CheckpointRow.job_id == job_id)).all()
    assert events == ["submitted", "admit", "launched", "started", "succeeded"]
    assert [(c.step, c.path) for c in checkpoints] == [(5, str(tmp_path / "ckpt" / job_id / "step-5"))]
    logs = backend.logs(f"{job_id}/0", 10, time.time())  # type: ignore[attr-defined]
    assert logs is not None
    assert backend.gangs(time.time()) == []  # type: ignore[attr-defined]  # forgotten once stored
