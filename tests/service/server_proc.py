"""Running `trainpool server` as a real process, for crash and failover tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .conftest import free_port

POOL_YAML = """
name: crash
flavors: [{name: h100}]
node_groups: [{flavor: h100, count: 8, accelerators: 8, racks_per_spine: 2, name_prefix: h100}]
orgs:
  - {name: a, quotas: {h100: {nominal: 32}}}
  - {name: b, quotas: {h100: {nominal: 32}}}
"""
ADMIN = "tp_test-admin-token-for-crash-tests"


@dataclass
class ServerProc:
    db: str
    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    pool_yaml: str = POOL_YAML

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *extra: str) -> None:
        pool = self.workdir / "pool.yaml"
        pool.write_text(self.pool_yaml)
        env = {**os.environ, "TRAINPOOL_ADMIN_TOKEN": ADMIN, "XDG_DATA_HOME": str(self.workdir)}
        cmd = [
            sys.executable, "-m", "scheduler.cli.main", "server", "--db", self.db, "--pool", str(pool),
            "--port", str(self.port), "--interval", "0.1", "--lease-ttl", "2",
            "--sim-state", str(self.workdir / "sim.json"), "--sim-duration", "0.5", *extra,
        ]  # fmt: skip
        # A restart keeps the port (clients hold the URL); the port can be held for a
        # moment after a kill, or taken by another test's probe, so a refused bind is
        # retried for a while rather than failing the test.
        for attempt in range(40):
            path = self.workdir / f"server-{self.port}-{self.starts}-{attempt}.log"
            with open(path, "wb") as log:
                self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
            try:
                self.wait_ready()
                break
            except RuntimeError:
                if "address already in use" not in path.read_text(errors="replace"):
                    raise
                time.sleep(0.25)
        else:
            raise RuntimeError(f"port {self.port} stayed in use for 10 s; see {self.workdir}")
        self.starts += 1

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.workdir}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server on {self.url} not ready after {timeout}s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def ready(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/readyz", timeout=2.0).json())


def admin_client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10.0)
