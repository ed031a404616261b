"""The real control loop on the ray backend: a submitted gang is placed, runs on Ray,
reports checkpoints and succeeds; a gang that loses a node comes back on other nodes
from its last checkpoint. The store follows it the whole way."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlmodel import select

from scheduler.control.loop import ControlLoop, LoopSettings
from scheduler.control.outcome import ApplyOptions
from scheduler.store import jobs as jobstore
from scheduler.store import orgs as orgstore
from scheduler.store.db import open_database
from scheduler.store.tables import CheckpointRow, JobRow
from scheduler.store.view import PoolView
from values.domain import Flavor, JobSpec, Node
from values.lifecycle import JobState
from values.progress import ProgressRule
from values.quotas import FlavorQuota, Org
from values.validation import ValidationRule

# One group: under `pytest -n N --dist loadgroup` these share one worker, hence one cluster.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("ray")]

# Counts steps, 0.2 s each; rank 0 checkpoints every 5 steps (a folder with the step in
# it, then the manifest, atomically). A restarted attempt resumes from
# TRAINPOOL_RESUME_FROM and stops 10 steps later; the first attempt runs until STEPS.
TRAIN = """
import json, os, time
rank, attempt = int(os.environ["RANK"]), int(os.environ["TRAINPOOL_ATTEMPT"])
folder = os.environ["TRAINPOOL_CHECKPOINT_DIR"]
resume = os.environ.get("TRAINPOOL_RESUME_FROM")
step = int(open(os.path.join(resume, "step")).read()) if resume else 0
print(f"attempt {attempt} starts at step {step}", flush=True)
if os.environ.get("FAIL_AT") and rank == int(os.environ.get("FAIL_RANK", "0")):
    time.sleep(float(os.environ["FAIL_AT"]))
    raise SystemExit(3)  # the job's own failure
last = step + 10 if attempt > 0 else int(os.environ["STEPS"])
while step < last:
    time.sleep(0.2)
    step += 1
    if rank == 0 and step % 5 == 0:
        here = os.path.join(folder, f"step-{step}")
        os.makedirs(here, exist_ok=True)
        open(os.path.join(here, "step"), "w").write(str(step))
        with open(os.path.join(folder, ".manifest.tmp"), "w") as f:
            json.dump({"step": step, "path": here, "at": time.time()}, f)
        os.replace(os.path.join(folder, ".manifest.tmp"), os.path.join(folder, "trainpool-checkpoint.json"))
print(f"attempt {attempt} done at step {step}", flush=True)
"""


class LoopOnRay:
    """A store on SQLite and the real control loop, driving a RayBackend."""

    def __init__(
        self,
        backend: object,
        tmp_path: Path,
        quotas: dict[str, int],
        progress: ProgressRule | None = None,
        validation: ValidationRule | None = None,
    ) -> None:
        self.db = open_database(f"sqlite:///{tmp_path / 'pool.db'}")
        self.ckpt = tmp_path / "ckpt"
        org = Org(name="a", quotas={f: FlavorQuota(nominal=n) for f, n in quotas.items()})
        with self.db.write() as s:
            orgstore.seed_from_config(s, (org,), time.time())
        settings = LoopSettings(
            holder="ray-test",
            lease_ttl=30.0,
            apply=ApplyOptions(
                checkpoint_root=str(self.ckpt),
                progress=progress or ProgressRule(),
                validation=validation or ValidationRule(),
            ),
        )
        view = PoolView(flavors=tuple(Flavor(name=f) for f in quotas))
        self.loop = ControlLoop(self.db, backend, view, settings=settings)  # type: ignore[arg-type]

    def submit(
        self, flavor: str, replicas: int, accelerators: int, env: dict[str, str], **extra: object
    ) -> str:
        command = extra.pop("command", ["python", "-c", TRAIN])
        spec = JobSpec.model_validate(
            {"name": "train", "org": "a", "command": command, "env": env,
             "gang": {"replicas": replicas, "accelerators": accelerators, "flavor": flavor}, **extra}
        )  # fmt: skip
        with self.db.write() as s:
            sub = jobstore.submit(
                s, spec, priority=500, now=time.time(), submitted_by=None, client_request_id=None
            )
        return sub.job.id

    def job(self, job_id: str) -> JobRow:
        with self.db.read() as s:
            return jobstore.get(s, job_id)

    def run_until(self, job_id: str, done: Callable[[JobRow], bool], timeout: float = 90.0) -> list[str]:
        """Cycle (as the server does, but every 0.2 s) until ``done(job)``; the states seen."""
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.loop.cycle()
            job = self.job(job_id)
            if not seen or seen[-1] != job.state:
                seen.append(job.state)
            if done(job):
                return seen
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} stuck; states seen: {seen}")

    def checkpoints(self, job_id: str) -> list[tuple[int | None, str]]:
        with self.db.read() as s:
            rows = s.exec(select(CheckpointRow).where(CheckpointRow.job_id == job_id)).all()
            return [(c.step, c.path) for c in rows]

    def events(self, job_id: str) -> list[str]:
        with self.db.read() as s:
            return [e.event for e in jobstore.events(s, job_id)]


def finished(job: JobRow) -> bool:
    return job.state in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


def test_a_gang_submitted_to_the_store_runs_on_ray_and_succeeds(
    make_backend: Callable[..., object], tmp_path: Path
) -> None:
    backend = make_backend()
    pool = LoopOnRay(backend, tmp_path, {"h100": 16})
    job = pool.submit("h100", replicas=2, accelerators=4, env={"STEPS": "12"})
    seen = pool.run_until(job, finished)
    assert seen[-1] == JobState.SUCCEEDED, seen
    assert JobState.RUNNING in seen
    assert pool.events(job) == ["submitted", "admit", "launched", "started", "succeeded"]
    # Read on rank 0's node while it ran, and once more at its end: step 10 is the last.
    assert pool.checkpoints(job)[-1] == (10, str(pool.ckpt / job / "step-10"))
    logs = backend.logs(f"{job}/0", 10, time.time())  # type: ignore[attr-defined]
    assert "[rank 1] attempt 0 done at step 12" in logs
    assert backend.gangs(time.time()) == []  # type: ignore[attr-defined]  # forgotten once stored


def test_a_gang_that_loses_a_node_resumes_from_its_checkpoint_on_other_nodes(
    ray_cluster: object, make_backend: Callable[..., object], tmp_path: Path
) -> None:
    cluster = ray_cluster
    spare = [Node(name=f"a100-{i:02d}", flavor="a100", accelerators=2) for i in range(3)]
    for node in spare:
        cluster.add_node(node)  # type: ignore[attr-defined]
    try:
        backend = make_backend()
        pool = LoopOnRay(backend, tmp_path, {"a100": 6})
        job = pool.submit("a100", replicas=2, accelerators=2, env={"STEPS": "1000"})
        pool.run_until(job, lambda j: j.state == JobState.RUNNING and pool.checkpoints(job) != [])
        first_nodes = set(backend._gangs[f"{job}/0"].nodes)  # type: ignore[attr-defined]
        victim = sorted(first_nodes)[1]

        killed_at = cluster.kill_node(victim)  # type: ignore[attr-defined]
        pool.run_until(job, lambda j: j.attempt == 1 and j.state == JobState.RUNNING, timeout=60)
        back = time.time() - killed_at
        print(f"\nnode killed -> restarted gang RUNNING on other nodes: {back:.2f}s")
        assert back < 15.0
        second_nodes = set(backend._gangs[f"{job}/1"].nodes)  # type: ignore[attr-defined]
        assert victim not in second_nodes and len(second_nodes) == 2

        seen = pool.run_until(job, finished)
        assert seen[-1] == JobState.SUCCEEDED, seen
        resumed = backend.logs(f"{job}/1", 50, time.time(), replica=0)  # type: ignore[attr-defined]
        start = int(resumed[0].split("at step ")[1])
        assert start >= 5 and start % 5 == 0  # the step counter continued, not restarted
        assert resumed[-1] == f"attempt 1 done at step {start + 10}"
        assert pool.job(job).restarts == 0  # a lost node is not the job's fault
        assert "restart" in pool.events(job)
    finally:
        for node in spare:
            if node.name in cluster.node_ids:  # type: ignore[attr-defined]
                cluster.kill_node(node.name)  # type: ignore[attr-defined]


DDP = Path(__file__).resolve().parents[2] / "examples" / "train" / "ddp_train.py"
KILLS = 20


def test_twenty_node_kills_under_a_ddp_gang_are_all_the_infrastructures_and_none_is_charged(
    ray_cluster: object, make_backend: Callable[..., object], tmp_path: Path
) -> None:
    # A 2-rank PyTorch DDP gang (gloo). Killing a node mid-step makes the surviving rank's
    # allreduce fail and exit non-zero at once, usually before Ray has declared the node
    # dead: the correlation window must still put each of the 20 on the infrastructure.
    cluster = ray_cluster
    spare = [Node(name=f"k-{i:02d}", flavor="a100", accelerators=2) for i in range(3)]
    for node in spare:
        cluster.add_node(node)  # type: ignore[attr-defined]
    try:
        backend = make_backend()
        pool = LoopOnRay(backend, tmp_path, {"a100": 6})
        train = ["python", str(DDP), "--steps", "99999", "--checkpoint-every", "20", "--step-seconds", ".05"]
        job = pool.submit(
            "a100", replicas=2, accelerators=2, env={}, command=train,
            restart={"max_restarts": 0, "backoff_seconds": 0},
        )  # fmt: skip
        survivor_failed_first = 0
        for kill in range(KILLS):
            key = f"{job}/{kill}"

            def stepping(j: JobRow, key: str = key) -> bool:
                if j.state != JobState.RUNNING:
                    return False
                return any(" loss " in line for line in backend.logs(key, 5, time.time(), replica=0) or [])  # type: ignore[attr-defined]

            pool.run_until(job, stepping, timeout=90)
            gang = backend._gangs[key]  # type: ignore[attr-defined]
            victim = gang.nodes[kill % 2]  # rank 0's node, then rank 1's
            cluster.kill_node(victim)  # type: ignore[attr-defined]
            pool.run_until(job, lambda j, n=kill + 1: j.attempt == n, timeout=60)
            survivor = 1 - kill % 2
            exit_ = gang.exits.get(survivor)
            death = gang.deaths.get(kill % 2)
            if exit_ is not None and exit_.code != 0 and death is not None and exit_.at < death.at:
                survivor_failed_first += 1
            row = pool.job(job)
            assert (row.restarts, row.failure_class) == (0, "infrastructure"), (kill, row.message)
            cluster.restart_node(victim)  # type: ignore[attr-defined]
        print(f"\n{KILLS} kills: all infrastructure; the survivor exited non-zero before the loss was "
              f"seen in {survivor_failed_first}")  # fmt: skip
        assert survivor_failed_first > 0  # the race the window exists for did happen
    finally:
        for node in spare:
            if node.name in cluster.node_ids:  # type: ignore[attr-defined]
                cluster.kill_node(node.name)  # type: ignore[attr-defined]


def test_own_failures_are_retried_with_backoff_then_failed_with_the_reason(
    make_backend: Callable[..., object], tmp_path: Path
) -> None:
    backend = make_backend()
    pool = LoopOnRay(backend, tmp_path, {"h100": 16})
    restart = {"max_restarts": 2, "backoff_seconds": 1.0, "backoff_max_seconds": 60}
    env = {"STEPS": "1000", "FAIL_AT": "0.5", "FAIL_RANK": "1"}
    job = pool.submit("h100", replicas=2, accelerators=4, env=env, restart=restart)
    eligible: list[float] = []
    failed_at: list[float] = []

    def note(j: JobRow) -> bool:
        if j.restarts > len(eligible):
            eligible.append(j.eligible_at)
            failed_at.append(time.time())
        return finished(j)

    seen = pool.run_until(job, note, timeout=120)
    row = pool.job(job)
    assert seen[-1] == JobState.FAILED, seen
    assert (row.restarts, row.attempt, row.exit_code, row.failure_class) == (2, 2, 3, "job")
    gaps = [e - f for e, f in zip(eligible, failed_at, strict=True)]
    assert gaps[0] == pytest.approx(1.0, abs=0.6) and gaps[1] == pytest.approx(2.0, abs=0.6), gaps
    assert pool.events(job).count("restart") == 2 and pool.events(job)[-1] == "failed"
    # The loop keeps cycling, as the server does; the failed gang's survivors go with it.
    import ray

    deadline = time.monotonic() + 60
    while backend.gangs(time.time()) and time.monotonic() < deadline:  # type: ignore[attr-defined]
        pool.loop.cycle()
        time.sleep(0.2)
    assert backend.gangs(time.time()) == []  # type: ignore[attr-defined]
    assert not [a for a in ray.util.list_named_actors(all_namespaces=True) if job in a["name"]]


def test_a_job_cancelled_mid_run_leaves_no_actor_process_or_placement_group(
    make_backend: Callable[..., object], tmp_path: Path
) -> None:
    import ray

    from scheduler.store import jobs as jobs_store

    backend = make_backend()
    pool = LoopOnRay(backend, tmp_path, {"h100": 16})
    job = pool.submit("h100", replicas=2, accelerators=4, env={"STEPS": "100000"}, grace_period_seconds=5)
    pool.run_until(job, lambda j: j.state == JobState.RUNNING)
    assert processes_with_env(f"TRAINPOOL_JOB_ID={job}"), "the replicas run as processes"
    with pool.db.write() as s:
        jobs_store.cancel(s, jobs_store.get(s, job), time.time(), None)
    deadline = time.monotonic() + 60
    while backend.gangs(time.time()) and time.monotonic() < deadline:  # type: ignore[attr-defined]
        pool.loop.cycle()
        time.sleep(0.2)
    assert pool.job(job).state == JobState.CANCELLED
    assert backend.gangs(time.time()) == []  # type: ignore[attr-defined]
    assert not [a for a in ray.util.list_named_actors(all_namespaces=True) if job in a["name"]]
    groups = ray.util.placement_group_table().values()
    assert all(g["state"] == "REMOVED" for g in groups if job in (g["name"] or ""))
    assert processes_with_env(f"TRAINPOOL_JOB_ID={job}") == []


def processes_with_env(entry: str) -> list[int]:
    """Processes whose environment holds ``entry`` (the replicas carry their job id)."""
    import os

    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if entry.encode() in f.read().split(b"\0"):
                    found.append(int(pid))
        except OSError:
            continue
    return found
