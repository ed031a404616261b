"""The actor that runs one replica of a gang on its node.

It starts the job's command as a child process in a process group of its own, sends
the output to the replica's log file, and answers the backend's calls: when the
process runs, how it exited, the newest checkpoint rank 0 reported. Its methods run
in threads (the actor is created with ``max_concurrency``; each server that adopts
the gang holds one in ``wait``), so ``wait`` may block
while ``terminate`` and ``checkpoint`` still answer.

This module is imported inside Ray workers: trainpool must be importable on every
node (the same installation as the server's).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

# What Ray 2.60 sets for its worker processes only (seen in a replica's environment);
# the job is not a Ray worker and must not inherit them.
_WORKER_ONLY = ("RAY_JOB_ID", "RAY_RAYLET_PID", "RAY_CLIENT_MODE", "RAY_LD_PRELOAD_ON_WORKERS")

_PR_SET_PDEATHSIG = 1
MANIFEST = "trainpool-checkpoint.json"
LAST_LINE = 300  # characters of a failed process's last line that go into its status


def _find_prctl() -> Any:
    try:
        return ctypes.CDLL(None).prctl
    except (OSError, AttributeError):
        return None


# Looked up here, not in the forked child: the child of a threaded process must not
# take locks (dlopen's) that another thread may have held at the fork.
_PRCTL = _find_prctl()


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the thread that started it ends, i.e.
    when the actor's process dies (killed, or its node's raylet gone) without having
    stopped the job. Best effort: where prctl is missing, nothing happens."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def read_manifest(folder: str | Path) -> tuple[int, str] | None:
    """The checkpoint manifest the SDK writes atomically: ``{"step", "path", "at"}``."""
    try:
        from scheduler.sdk import read_manifest as sdk_read

        return sdk_read(folder)
    except ImportError:
        pass
    try:
        data = json.loads((Path(folder) / MANIFEST).read_text())
        return int(data["step"]), str(data["path"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def exit_code_of(returncode: int) -> int:
    """Popen's -N for a signal becomes the shell's 128+N, so codes are never negative."""
    return 128 - returncode if returncode < 0 else returncode


class ReplicaProcess:
    """Wrapped with ``ray.remote`` by the backend; see ``backend.REPLICA_OPTIONS``."""

    def __init__(
        self, command: list[str], env: dict[str, str], cwd: str, log_path: str, checkpoint_dir: str | None
    ) -> None:
        self._command = command
        self._env = env
        self._cwd = cwd
        self._log_path = Path(log_path)
        self._checkpoint_dir = checkpoint_dir
        self._lock = threading.Lock()
        self._spawned = threading.Event()
        self._done = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._cancelled = False
        self._started_at: float | None = None
        self._code: int | None = None
        self._ended_at: float | None = None
        self._endpoint: tuple[str, int] | None = None

    # --- rendezvous ----------------------------------------------------------------
    def rendezvous(self) -> tuple[str, int]:
        """This node's address and a free port on it (rank 0 only): MASTER_ADDR/PORT."""
        with self._lock:
            if self._endpoint is None:
                import ray

                with socket.socket() as s:
                    s.bind(("", 0))
                    port = int(s.getsockname()[1])
                self._endpoint = (ray.util.get_node_ip_address(), port)
            return self._endpoint

    # --- the process -----------------------------------------------------------------
    def run(self, rank0: Any | None) -> dict[str, Any]:
        """Start the command once (idempotent); rank 0 passes None, the others rank 0's
        actor, whose address they wait for."""
        import ray

        if not self._spawned.is_set() and not self._cancelled:
            addr, port = (
                self.rendezvous() if rank0 is None else ray.get(rank0.rendezvous.remote(), timeout=300)
            )
            with self._lock:
                if not self._spawned.is_set() and not self._cancelled:
                    env = {k: v for k, v in os.environ.items() if k not in _WORKER_ONLY}
                    env.update(self._env, MASTER_ADDR=addr, MASTER_PORT=str(port))
                    threading.Thread(
                        target=self._keep, args=(env,), name="replica-keeper", daemon=True
                    ).start()
                    self._spawned.wait()
        if self._cancelled and not self._spawned.is_set():
            self._done.set()
        return self.info()

    def _keep(self, env: dict[str, str]) -> None:
        """Owns the child for its whole life: PDEATHSIG is tied to this thread."""
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._log_path, "ab") as log:
            try:
                if not self._command:
                    raise FileNotFoundError("the job has no command")
                proc = subprocess.Popen(
                    self._command, env=env, cwd=self._cwd, stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent,
                )  # fmt: skip
            except OSError as exc:
                log.write(f"[trainpool] cannot start {self._command!r}: {exc}\n".encode())
                self._started_at = self._ended_at = time.time()
                self._code = 127
                self._spawned.set()
                self._done.set()
                return
            self._proc, self._started_at = proc, time.time()
            self._spawned.set()
            code = proc.wait()
        # What the job left in its group (data loader workers ...) goes with it.
        _killpg(proc.pid, signal.SIGKILL)
        self._code, self._ended_at = exit_code_of(code), time.time()
        self._done.set()

    def info(self) -> dict[str, Any]:
        import ray

        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "pid": self._proc.pid if self._proc else None,
            "started_at": self._started_at,
            "spawned": self._spawned.is_set(),
            "cancelled": self._cancelled,
            "exit_code": self._code,
            "ended_at": self._ended_at,
        }

    def wait(self) -> tuple[int | None, float | None, str]:
        """Blocks until the process exited (or was cancelled before it started):
        (exit code or None if it never started, when, the last line of its output if the
        code is not 0: a failed program's last words are usually why)."""
        self._done.wait()
        last = ""
        if self._code not in (None, 0):
            last = next((line.strip() for line in reversed(self.tail(5)) if line.strip()), "")[:LAST_LINE]
        return self._code, self._ended_at, last

    def terminate(self, grace: float) -> tuple[int | None, float | None]:
        """SIGTERM to the process group, SIGKILL after ``grace`` seconds; a replica not
        started yet never starts."""
        with self._lock:
            self._cancelled = True
            proc = self._proc
            if not self._spawned.is_set():
                self._ended_at = time.time()
                self._done.set()
        if proc is not None and not self._done.is_set():
            _killpg(proc.pid, signal.SIGTERM)
            if not self._done.wait(max(0.0, grace)):
                _killpg(proc.pid, signal.SIGKILL)
            self._done.wait(10.0)
        return self._code, self._ended_at

    # --- what the backend reads ------------------------------------------------------
    def checkpoint(self) -> tuple[int, str] | None:
        if self._checkpoint_dir is None:
            return None
        return read_manifest(self._checkpoint_dir)

    def progress(self, attempt: int) -> list[dict[str, Any]]:
        """Every rank's latest progress report of ``attempt`` (rank 0's actor reads the
        folder beside the checkpoints, where every rank of the gang writes)."""
        if self._checkpoint_dir is None:
            return []
        from scheduler.sdk import read_progress

        return read_progress(self._checkpoint_dir, attempt)

    def tail(self, lines: int) -> list[str]:
        try:
            with open(self._log_path, errors="replace") as f:
                return [line.rstrip("\n") for line in deque(f, maxlen=lines)]
        except OSError:
            return []


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
