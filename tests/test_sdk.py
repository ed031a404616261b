"""The training SDK: checkpoint folder, reports, resume point, stopping with grace."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from scheduler import sdk

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def pool_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "ck" / "j-1"
    monkeypatch.setenv("TRAINPOOL_JOB_ID", "j-1")
    monkeypatch.setenv("TRAINPOOL_ATTEMPT", "2")
    monkeypatch.setenv("TRAINPOOL_CHECKPOINT_DIR", str(folder))
    monkeypatch.setenv("RANK", "0")
    for name in ("TRAINPOOL_RESUME_FROM", "TRAINPOOL_URL", "TRAINPOOL_TOKEN", "TRAINPOOL_NODE"):
        monkeypatch.delenv(name, raising=False)
    return folder


def test_report_writes_a_manifest_the_backend_can_read(pool_env: Path) -> None:
    assert sdk.read_manifest(pool_env) is None
    path = sdk.checkpoint_dir() / "step-7.pt"
    path.write_bytes(b"state")
    sdk.report_checkpoint(7, path)
    assert sdk.read_manifest(pool_env) == (7, str(path.resolve()))
    assert sdk.resume_from() == str(path.resolve())
    leftovers = [p.name for p in pool_env.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == [], "the manifest is replaced atomically, no temporary file stays"


def test_only_rank_zero_reports(pool_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    sdk.report_checkpoint(3, pool_env / "x.pt")
    assert sdk.read_manifest(pool_env) is None


def test_a_plain_ddp_rank_reports_without_importing_ray() -> None:
    """A torchrun/DDP process that imported Ray (through the rank lookup) lingered after
    its peer died instead of exiting: Ray's exit hooks held it until the pool killed it."""
    code = "import sys\nfrom scheduler import sdk\nassert sdk.rank() == 3\nprint('ray' in sys.modules)"
    env = {**os.environ, "RANK": "3", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_inside_ray_train_the_rank_is_ray_trains(monkeypatch: pytest.MonkeyPatch) -> None:
    class Context:
        def get_world_rank(self) -> int:
            return 5

    class Train:
        get_context = staticmethod(Context)

    monkeypatch.setitem(sys.modules, "ray.train", Train())
    monkeypatch.setenv("RANK", "0")
    assert sdk.rank() == 5


def test_bad_step_is_refused_with_the_field(pool_env: Path) -> None:
    with pytest.raises(ValueError, match="step"):
        sdk.report_checkpoint(-1, pool_env / "x.pt")


def test_resume_prefers_the_folder_manifest_over_a_stale_pool_value(
    pool_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job may save in its grace period after the server last looked."""
    old, new = pool_env / "old.pt", pool_env / "new.pt"
    pool_env.mkdir(parents=True)
    old.write_bytes(b"1")
    new.write_bytes(b"2")
    monkeypatch.setenv("TRAINPOOL_RESUME_FROM", str(old))
    assert sdk.resume_from() == str(old)
    sdk.report_checkpoint(9, new)
    assert sdk.resume_from() == str(new.resolve())


def test_a_missing_checkpoint_file_is_not_a_resume_point(
    pool_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRAINPOOL_RESUME_FROM", str(pool_env / "gone.pt"))
    assert sdk.resume_from() is None


def test_a_corrupt_manifest_reads_as_none(pool_env: Path) -> None:
    pool_env.mkdir(parents=True)
    (pool_env / sdk.MANIFEST).write_text('{"step": "seven"')
    assert sdk.read_manifest(pool_env) is None


def test_context_travels_as_plain_data() -> None:
    ctx = sdk.Context.from_env({"TRAINPOOL_JOB_ID": "j-9", "TRAINPOOL_ATTEMPT": "3"})
    assert ctx.job_id == "j-9" and ctx.attempt == 3
    assert sdk.Context(**ctx.as_dict()) == ctx
    assert json.loads(json.dumps(ctx.as_dict()))["checkpoint_dir"] == "checkpoints"


STOPPER = """
import os, sys, time, datetime
import torch.distributed as dist
from scheduler import sdk
sdk.install_sigterm_hook()
dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=30))
print("ready", flush=True)
for step in range(100000):
    time.sleep(0.01)
    if sdk.should_stop():
        print(f"stopped at {step}", flush=True)
        dist.barrier()  # leave together, as examples/train/ddp_train.py does
        dist.destroy_process_group()
        sys.exit(0)
"""


@pytest.mark.slow
def test_sigterm_to_one_rank_stops_all_ranks_in_the_same_step(tmp_path: Path) -> None:
    """Without the all-reduce the signalled rank would leave and the other would hang."""
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29611"}
    env["PYTHONPATH"] = str(ROOT)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", STOPPER], env={**env, "RANK": str(r)}, stdout=subprocess.PIPE, text=True
        )
        for r in range(2)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        procs[1].send_signal(signal.SIGTERM)
        outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0]
    assert outs[0] == outs[1] and outs[0].startswith("stopped at ")


def test_progress_is_written_at_most_every_interval_with_the_median_step_time(
    pool_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sdk, "_progress", sdk._Progress())
    monkeypatch.setenv("RANK", "1")
    sdk.report_progress(0, step_seconds=0.5, every=3600)  # the first report is written at once
    for step, seconds in enumerate([0.5, 0.7, 9.0, 0.6], start=1):
        sdk.report_progress(step, step_seconds=seconds, every=3600)
    assert sdk.read_progress(pool_env, attempt=2) == [
        {"rank": 1, "step": 0, "step_seconds": 0.5, "node": None}
    ]
    monkeypatch.setenv("TRAINPOOL_NODE", "h100-03")  # the pool's, on every backend
    sdk.report_progress(5, step_seconds=0.6, every=0)
    # The median of the recent step times: one slow step (9 s) does not move it.
    assert sdk.read_progress(pool_env, attempt=2) == [
        {"rank": 1, "step": 5, "step_seconds": 0.6, "node": "h100-03"}
    ]
    assert sdk.read_progress(pool_env, attempt=3) == []  # another attempt's files are not this one's


def test_bad_progress_is_refused_with_the_field(pool_env: Path) -> None:
    with pytest.raises(ValueError, match="step: must be >= 0"):
        sdk.report_progress(-1)
    with pytest.raises(ValueError, match="step_seconds: must be >= 0"):
        sdk.report_progress(1, step_seconds=float("nan"))
