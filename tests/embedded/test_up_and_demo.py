"""The embedded pool for real: `trainpool up` serves the API over a local Ray cluster and
Ctrl-C leaves nothing running; `trainpool demo` holds every check in under 3 minutes."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from interruptible import trainpool

pytestmark = [
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.xdist_group("ray"),
    pytest.mark.timeout(420),
]
ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def _processes_mentioning(text: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if text in line and "ps -eo" not in line]


def test_up_serves_the_pool_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        trainpool("up", "--port", "0", "--data-dir", str(tmp_path)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV,
    )  # fmt: skip
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 180
        url = None
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, f"trainpool up exited early: {''.join(lines)}"
            lines.append(line)
            if m := re.match(r"trainpool is up: (http://\S+)", line):
                url = m.group(1)
        assert url is not None, "".join(lines)
        while not lines[-1].startswith("Ctrl-C stops the pool"):
            lines.append(proc.stdout.readline())
            assert lines[-1], f"trainpool up exited early: {''.join(lines)}"
        token = (tmp_path / "admin-token").read_text().strip()
        assert oct((tmp_path / "admin-token").stat().st_mode & 0o777) == "0o600"
        http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        nodes = http.get("/v1/nodes").json()
        assert len(nodes) == 6 and {n["health"] for n in nodes} == {"healthy"}
        spec = {
            "name": "hello", "org": "research",
            "gang": {"flavor": "sim-gpu", "replicas": 2, "accelerators": 2},
            "command": [sys.executable, "-c", "import os; print('rank', os.environ['RANK'], 'of', 2)"],
        }  # fmt: skip
        job = http.post("/v1/jobs", json={"spec": spec}).json()
        while (state := http.get(f"/v1/jobs/{job['id']}").json()["state"]) not in ("SUCCEEDED", "FAILED"):
            assert time.monotonic() < deadline, state
            time.sleep(0.5)
        assert state == "SUCCEEDED"
        logs = http.get(f"/v1/jobs/{job['id']}/logs").json()["lines"]
        assert any("rank 0 of 2" in ln for ln in logs) and any("rank 1 of 2" in ln for ln in logs)

        # The first job `up` suggests, submitted as it says (from the repository).
        submit = next(ln for ln in lines if ln.strip().startswith("trainpool submit"))
        words = shlex.split(submit, comments=True)
        env = {**ENV, "TRAINPOOL_URL": url, "TRAINPOOL_TOKEN": token}
        done = subprocess.run(
            trainpool(*words[1:]), cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr
        first = next(j for j in http.get("/v1/jobs").json() if j["name"] == "hello-embedded")
        assert first["state"] == "SUCCEEDED", first
        logs = http.get(f"/v1/jobs/{first['id']}/logs").json()["lines"]
        assert any("rank 0 of 2 on node-" in ln for ln in logs), logs
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        out, _ = proc.communicate(timeout=150)  # a loaded CI machine: Ray stops slowly
    assert proc.returncode == 0, out
    assert "nothing left running" in out
    time.sleep(2)
    assert _processes_mentioning("tp-ray-") == [] or not any(
        "raylet" in p for p in _processes_mentioning("tp-ray-")
    )


def test_demo_holds_every_check_in_under_three_minutes() -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "scheduler.cli.main", "demo"],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=400,
    )
    took = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert re.search(r"(\d+)/\1 checks held", done.stdout), done.stdout[-2000:]
    assert took < 180, f"the demo took {took:.0f} s"
    print(f"\ndemo: {took:.0f} s")
