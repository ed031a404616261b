"""`trainpool server` as a child process on a free local port, for the benchmarks that
measure a real server from the outside (`bench api`, `bench soak`). A context manager:
ready (``/readyz`` answers 200) on entry, stopped on exit, its output kept in a log file.
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
