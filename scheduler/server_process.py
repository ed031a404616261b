"""`trainpool server` as a child process on a free local port, for the benchmarks that
measure a real server from the outside (`bench api`, `bench soak`). A context manager:
ready (``/readyz`` answers 200) on entry, stopped on exit, its output kept in a log file.
Also the reading of its cycle-latency histogram from ``/metrics``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


class ServerProcess:
    def __init__(self, args: list[str], workdir: Path, env: dict[str, str], timeout: float = 120.0) -> None:
        self.args, self.workdir, self.env, self.timeout = args, workdir, env, timeout
        self.log = workdir / "server.log"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        cmd = [sys.executable, "-m", "scheduler.cli.main", "server", "--port", str(self.port), *self.args]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env}
            )
        deadline = time.monotonic() + self.timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}; see {self.log}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                if time.monotonic() > deadline:
                    self.__exit__()
                    raise TimeoutError(f"the server did not become ready; see {self.log}") from None
            time.sleep(0.2)

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def scrape(url: str, token: str) -> str:
    """The server's /metrics, read with a pool-admin (or the metrics) token."""
    request = urllib.request.Request(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return str(resp.read().decode())


def cycle_histogram(text: str) -> tuple[dict[float, float], float, float]:
    """Cumulative bucket counts, sum and count of trainpool_scheduling_cycle_seconds."""
    buckets: dict[float, float] = {}
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith("trainpool_scheduling_cycle_seconds_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("trainpool_scheduling_cycle_seconds_sum"):
            total = float(line.rsplit(" ", 1)[1])
        elif line.startswith("trainpool_scheduling_cycle_seconds_count"):
            count = float(line.rsplit(" ", 1)[1])
    return buckets, total, count


def window_p99(before: dict[float, float], after: dict[float, float]) -> float:
    """The smallest bucket bound under which 99% of this window's cycles fall."""
    deltas = sorted((le, after.get(le, 0.0) - before.get(le, 0.0)) for le in after)
    n = deltas[-1][1] if deltas else 0.0
    for le, cumulative in deltas:
        if n and cumulative >= 0.99 * n:
            return le
    return float("nan")
