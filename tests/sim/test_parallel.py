"""`trainpool sim --jobs N`: policies replayed in worker processes give the same output as
one after another, progress reaches the parent, errors read as without workers, and
Ctrl-C or a killed parent leaves no worker behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from interruptible import trainpool
from typer.testing import CliRunner

from scheduler.cli.main import app
from scheduler.core import decide
from scheduler.sim.run import SimRequest, run
from values.decisions import Decisions
from values.snapshot import Snapshot

from .helpers import random_rows, write_quotas, write_vc_trace

runner = CliRunner()
ORGS = ("aa", "bb", "cc")
QUOTAS = {"aa": 2, "bb": 1}


def small(tmp_path: Path, n: int = 60) -> tuple[Path, Path]:
    trace = write_vc_trace(tmp_path / "t.csv", random_rows(n, ORGS, seed=5))
    return trace, write_quotas(tmp_path / "q.csv", QUOTAS)


def cli_summaries(trace: Path, quotas: Path, jobs: str) -> list[dict[str, object]]:
    args = ["sim", "--trace", str(trace), "--quotas", str(quotas), "--policy", "all", "--load", "1.2"]
    res = runner.invoke(app, [*args, "--failures", "mtbf=30000", "--json", "-j", jobs])
    assert res.exit_code == 0, res.output
    return [untimed(p) for p in json.loads(res.output)["policies"]]


def untimed(value: Any) -> Any:
    """``value`` without its timings (``wall_s`` at any depth): they differ run to run."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if k != "wall_s"}
    return value


@pytest.mark.slow
def test_two_workers_give_the_same_summaries_as_one_after_another(tmp_path: Path) -> None:
    trace, quotas = small(tmp_path)
    sequential = cli_summaries(trace, quotas, "1")
    parallel = cli_summaries(trace, quotas, "2")
    assert [p["policy"] for p in parallel] == ["fifo", "slurm", "kueue", "tiresias", "trainpool"]
    assert sum(p["preemptions"]["total"] for p in parallel) > 0  # not a trivial replay
    assert parallel == sequential


@pytest.mark.slow
def test_progress_from_every_worker_reaches_the_parent(tmp_path: Path) -> None:
    trace, quotas = small(tmp_path, n=1000)
    ticks: dict[str, list[tuple[float, int, int]]] = {}

    def factory(name: str, total: int):  # type: ignore[no-untyped-def]
        assert name not in ticks, f"two bars for {name}"
        ticks[name] = []
        return lambda t, done, of: ticks[name].append((t, done, of))

    req = SimRequest(trace=trace, quotas=quotas, policy="fifo,kueue,trainpool", load=1.2, failures="none")
    out = run(req, progress=factory, jobs=2)
    assert set(ticks) == {"fifo", "kueue", "trainpool"}
    for name, seen in ticks.items():
        assert seen[0] == (0.0, 0, 1000), name  # the bar appears when a worker starts it
        assert any(0 < d < 1000 for _, d, _ in seen), name  # posts during the replay
        assert [d for _, d, _ in seen] == sorted(d for _, d, _ in seen)
        assert seen[-1][1:] == (1000, 1000)  # and it ends full
    assert [s["policy"] for s in out.summaries] == ["fifo", "kueue", "trainpool"]


def test_an_injected_decide_runs_in_this_process_whatever_jobs_says(tmp_path: Path) -> None:
    trace, quotas = small(tmp_path, n=20)
    calls: list[float] = []

    def spy(snap: Snapshot, now: float) -> Decisions:
        calls.append(now)
        return decide(snap, now)

    out = run(SimRequest(trace=trace, quotas=quotas, policy="fifo,trainpool"), decide=spy, jobs=2)
    assert calls and len(out.summaries) == 2


def test_jobs_below_one_is_an_error_naming_the_option(tmp_path: Path) -> None:
    trace, quotas = small(tmp_path, n=5)
    res = runner.invoke(app, ["sim", "--trace", str(trace), "--quotas", str(quotas), "-j", "0"])
    assert res.exit_code == 2 and "--jobs: must be >= 1" in res.output


@pytest.mark.slow
def test_an_error_in_a_worker_is_the_same_one_line_error(tmp_path: Path) -> None:
    # Two ids that differ only in case are two rows to the loader but one job name in
    # the replay: the error comes from inside the workers.
    rows = [("A1", "aa", 0.0, 1, 60.0), ("a1", "aa", 10.0, 1, 60.0), ("b2", "bb", 20.0, 8, 60.0)]
    trace = write_vc_trace(tmp_path / "t.csv", rows)
    quotas = write_quotas(tmp_path / "q.csv", QUOTAS)
    for jobs in ("1", "2"):
        args = ["--trace", str(trace), "--quotas", str(quotas), "--failures", "none"]
        res = runner.invoke(app, ["sim", *args, "--policy", "all", "-j", jobs])
        assert res.exit_code == 2, res.output
        assert "error: job id 'a1' appears twice in the trace" in res.output
        assert "Traceback" not in res.output


def children(pid: int) -> set[int]:
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.add(int(entry.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start_long_replay(tmp_path: Path, settle: float = 2.0) -> tuple[subprocess.Popen[bytes], set[int]]:
    """The command on a replay of several seconds per policy, in its own process group
    (as a terminal runs it); returns once its workers exist and ``settle`` seconds more
    (by default: past their imports, replaying)."""
    trace = write_vc_trace(tmp_path / "t.csv", random_rows(3000, ORGS, seed=4))
    quotas = write_quotas(tmp_path / "q.csv", {"aa": 3, "bb": 2, "cc": 1})
    cmd = trainpool("sim", "--trace", str(trace), "--quotas", str(quotas))
    proc = subprocess.Popen(
        [*cmd, "--policy", "fifo,trainpool", "--load", "1.5", "-j", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    kids: set[int] = set()
    while time.monotonic() < deadline and proc.poll() is None:
        kids |= children(proc.pid)
        if len(kids) >= 2:
            break
        time.sleep(0.1)
    assert len(kids) >= 2, "no workers started"
    time.sleep(settle)
    assert proc.poll() is None, "the replay ended before the test could interrupt it"
    return proc, kids


def stderr_when_done(proc: subprocess.Popen[bytes]) -> bytes:
    """Its stderr once it exited; killed with its group (workers too) if it does not."""
    try:
        return proc.communicate(timeout=30)[1]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise


def assert_gone(pids: set[int]) -> None:
    # Well before the replays would have ended on their own (over 8 s left each).
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    left = [p for p in pids if alive(p)]
    for p in left:  # do not leave them running for the next test
        os.kill(p, signal.SIGKILL)
    assert not left, f"workers left behind: {left}"


pytestmark_linux = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
# Stopped while replaying, and while the workers still import and unpickle the trace.
STARTED_OR_REPLAYING = pytest.mark.parametrize("settle", [2.0, 0.0], ids=["replaying", "starting"])


@pytest.mark.slow
@pytestmark_linux
@STARTED_OR_REPLAYING
def test_ctrl_c_stops_the_workers_without_a_traceback(tmp_path: Path, settle: float) -> None:
    proc, kids = start_long_replay(tmp_path, settle=settle)
    os.killpg(proc.pid, signal.SIGINT)  # what the terminal sends: the whole group
    err = stderr_when_done(proc)
    assert proc.returncode != 0
    assert b"Traceback" not in err, err.decode()
    assert_gone(kids)


@pytest.mark.slow
@pytestmark_linux
def test_a_killed_worker_fails_the_command_instead_of_hanging(tmp_path: Path) -> None:
    proc, kids = start_long_replay(tmp_path)
    worker = next(k for k in sorted(kids) if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes())
    os.kill(worker, signal.SIGKILL)  # the OOM killer, say
    err = stderr_when_done(proc)
    assert proc.returncode == 1
    assert b"a simulator worker was killed by signal 9" in err and b"Traceback" not in err, err.decode()
    assert_gone(kids)


@pytest.mark.slow
@pytestmark_linux
@STARTED_OR_REPLAYING
def test_sigterm_to_the_command_stops_the_workers_cleanly(tmp_path: Path, settle: float) -> None:
    proc, kids = start_long_replay(tmp_path, settle=settle)
    proc.terminate()  # kill, timeout: the parent only
    err = stderr_when_done(proc)
    assert proc.returncode == 128 + signal.SIGTERM
    assert b"Traceback" not in err and b"leaked" not in err, err.decode()
    assert_gone(kids)


@pytest.mark.slow
@pytestmark_linux
@STARTED_OR_REPLAYING
def test_a_killed_parent_takes_its_workers_with_it(tmp_path: Path, settle: float) -> None:
    proc, kids = start_long_replay(tmp_path, settle=settle)
    proc.kill()
    proc.wait(timeout=10)
    assert_gone(kids)
