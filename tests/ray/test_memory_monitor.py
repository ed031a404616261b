"""Real Ray: a replica that Ray's memory monitor kills fails its gang as the job's own
out-of-memory failure (exit 137, category oom), with Ray's reason in the message; before,
it read as a replica lost on a healthy node (restarted uncharged, the node blamed). Its
own one-node cluster, in a process of its own (``memory_monitor_kill.py``): the monitor
there kills whatever runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scheduler.failures import category_of
from values.restarts import FailureCategory

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_a_replica_the_memory_monitor_kills_is_the_jobs_own_oom() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_USAGE_STATS_ENABLED": "0"}  # fmt: skip
    script = Path(__file__).with_name("memory_monitor_kill.py")
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    status = json.loads(done.stdout.strip().splitlines()[-1])
    assert (status["phase"], status["exit_code"]) == ("failed", 137), status
    assert "killed by Ray's memory monitor: " in status["message"]
    assert "running low on memory" in status["message"], status
    assert category_of(status["exit_code"], status["message"]) is FailureCategory.OOM
