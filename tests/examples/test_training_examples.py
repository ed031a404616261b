"""The training examples, run for real: DDP with gloo across processes, the SDK from
inside Ray Train. Each resumes from the checkpoint its previous run reported."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scheduler import sdk

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ROOT / "examples" / "train"

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _env(folder: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRAINPOOL_CHECKPOINT_DIR": str(folder)}
    env.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    return {**env, **extra}


def _ddp(folder: Path, port: int, attempt: int, *args: str, world: int = 2) -> list[subprocess.Popen[str]]:
    procs = []
    for rank in range(world):
        env = _env(
            folder, RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
        )
        env["TRAINPOOL_ATTEMPT"] = str(attempt)
        cmd = [sys.executable, str(TRAIN / "ddp_train.py"), *args]
        procs.append(
            subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        )
    return procs


def test_ddp_stopped_by_sigterm_resumes_where_it_saved(tmp_path: Path) -> None:
    first = _ddp(tmp_path, 29651, 0, "--steps", "1000", "--checkpoint-every", "5", "--step-seconds", "0.05")
    deadline = time.monotonic() + 60
    while not (tmp_path / "trainpool-checkpoint.json").exists():  # first checkpoint: training is on
        assert time.monotonic() < deadline, "no checkpoint within 60 s"
        time.sleep(0.2)
    for p in first:
        p.send_signal(signal.SIGTERM)  # what the pool sends on a preemption or a move
    outs = [p.communicate(timeout=60)[0] for p in first]
    assert [p.returncode for p in first] == [0, 0], outs
    saved = json.loads((tmp_path / "trainpool-checkpoint.json").read_text())["step"]
    assert f"checkpoint step {saved}" in outs[0]

    second = _ddp(tmp_path, 29652, 1, "--steps", str(saved + 8), "--checkpoint-every", "5")
    outs = [p.communicate(timeout=120)[0] for p in second]
    assert [p.returncode for p in second] == [0, 0], outs
    assert f"resumed from step {saved}" in outs[0]
    assert f"step {saved + 1} loss" in outs[0] and "step 0 loss" not in outs[0], "started over"
    progress = (tmp_path / "progress.log").read_text().splitlines()
    assert progress == [
        f"attempt 0 first 0 last {saved} stopped",
        f"attempt 1 first {saved + 1} last {saved + 7} done",
    ]


def test_ddp_resumes_its_checkpoint_at_another_world_size(tmp_path: Path) -> None:
    # An elastic gang's resize: stopped at two ranks, restarted at three (a grow) from
    # the checkpoint; the model state is rank 0's, the same whatever the world size.
    first = _ddp(tmp_path, 29654, 0, "--steps", "10", "--checkpoint-every", "5")
    outs = [p.communicate(timeout=120)[0] for p in first]
    assert [p.returncode for p in first] == [0, 0], outs
    second = _ddp(tmp_path, 29655, 1, "--steps", "16", "--checkpoint-every", "5", world=3)
    outs = [p.communicate(timeout=120)[0] for p in second]
    assert [p.returncode for p in second] == [0, 0, 0], outs
    assert "resumed from step 9" in outs[0] and "backend gloo world 3 attempt 1" in outs[0]
    assert "step 10 loss" in outs[0] and "step 0 loss" not in outs[0], "started over"


def test_ddp_own_failure_exits_non_zero(tmp_path: Path) -> None:
    procs = _ddp(tmp_path, 29653, 0, "--steps", "50", "--fail-at-step", "3")
    codes = [p.wait(timeout=120) for p in procs]
    assert codes == [3, 3]


def test_sdk_inside_ray_train_reports_from_rank_zero_and_resumes(tmp_path: Path) -> None:
    def run(steps: int) -> dict[str, int]:
        cmd = [sys.executable, str(TRAIN / "ray_train_sdk.py"), "--steps", str(steps), "--workers", "2"]
        env = _env(tmp_path, TRAINPOOL_JOB_ID="j-raytrain")
        done = subprocess.run(
            [*cmd, "--progress-every", "0"], env=env, capture_output=True, text=True, timeout=240
        )
        assert done.returncode == 0, done.stderr[-3000:]
        manifest = json.loads((tmp_path / "trainpool-checkpoint.json").read_text())
        state: dict[str, int] = json.loads(Path(manifest["path"]).read_text())
        assert manifest["step"] == state["step"] == steps - 1
        return state

    first = run(7)
    assert first == {"step": 6, "start": 0, "world": 2}, "two workers all-reduced"
    # Each worker reported its own progress, under its Ray Train rank.
    progress = sdk.read_progress(tmp_path, attempt=0)
    assert [(p["rank"], p["step"]) for p in progress] == [(0, 6), (1, 6)], progress
    assert run(12) == {"step": 11, "start": 7, "world": 2}, "the second run resumed after step 6"


def test_torchrun_per_node_runs_every_process_through_the_sdk(tmp_path: Path) -> None:
    # Two pool replicas (nodes n0 and n1), two processes each under torchrun: four ranks
    # that all-reduce, checkpoint and report progress, each on its own node.
    procs = []
    for replica, node in enumerate(("n0", "n1")):
        env = _env(tmp_path, RANK=str(replica), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT="29656",
                   TRAINPOOL_ATTEMPT="0", TRAINPOOL_NODE=node, NPROC="2")  # fmt: skip
        cmd = ["sh", str(TRAIN / "torchrun_per_node.sh"), str(TRAIN / "ddp_train.py"), "--steps", "12",
               "--checkpoint-every", "5", "--progress-every", "0"]  # fmt: skip
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # its `python`: this one
        procs.append(
            subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        )
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert "backend gloo world 4 attempt 0" in outs[0]
    assert json.loads((tmp_path / "trainpool-checkpoint.json").read_text())["step"] == 11
    progress = sdk.read_progress(tmp_path, attempt=0)
    assert [(p["rank"], p["step"], p["node"]) for p in progress] == [
        (0, 11, "n0"), (1, 11, "n0"), (2, 11, "n1"), (3, 11, "n1"),
    ]  # fmt: skip
