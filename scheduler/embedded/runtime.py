"""A whole pool from one command: a local Ray cluster of simulated accelerator nodes and
the server on SQLite (the HTTP API in a thread, the control loop in its own process, as
``trainpool server`` runs them: ``scheduler.control.root``).

Everything lives in one data folder (``pool.db``, ``admin-token``, ``checkpoints/``,
``ray-logs/``), so a second ``trainpool up`` on the same folder finds its jobs, orgs and
token again; Ray's own state does not survive (running gangs are lost with the cluster,
and the loop restarts them as infrastructure failures, without charging them).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from scheduler.store.tokens import new_secret

if TYPE_CHECKING:
    from scheduler.backends.ray.cluster import LocalRayCluster
    from scheduler.config import PoolConfig
    from scheduler.control.root import Root

Say = Callable[[str], None]


def default_config_path() -> Path:
    return Path(str(resources.files("scheduler.embedded") / "embedded-pool.yaml"))


# The first job `trainpool up` suggests, written for the default pool.
EXAMPLE_JOB = Path("examples") / "jobs" / "embedded-hello.yaml"


def example_job(cwd: Path | None = None) -> Path | None:
    """The example job as its user can type it: relative when the current folder is the
    repository, else its path in the checkout this package runs from; None for an
    installed package, which ships no examples."""
    here = Path.cwd() if cwd is None else cwd
    if (here / EXAMPLE_JOB).is_file():
        return EXAMPLE_JOB
    checkout = Path(__file__).resolve().parents[2] / EXAMPLE_JOB
    return checkout if checkout.is_file() else None


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "trainpool" / "embedded"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class EmbeddedOptions:
    config: Path | None = None
    data_dir: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8642  # 0: any free port
    interval: float = 0.5  # most seconds between cycles: Ray exits are seen by polling


class EmbeddedPool:
    """``start()`` in the main thread (Ray ties its processes to the starting thread);
    ``stop()`` leaves nothing running. Usable as a context manager."""

    def __init__(self, opts: EmbeddedOptions, say: Say = print) -> None:
        self.opts = opts
        self.say = say
        self.data_dir = (opts.data_dir or default_data_dir()).resolve()
        self.config_path = (opts.config or default_config_path()).resolve()
        self.cluster: LocalRayCluster | None = None
        self.root: Root | None = None
        self.url = ""
        self.token = ""

    @property
    def config(self) -> PoolConfig:
        from scheduler.config import load_pool_config

        return load_pool_config(self.config_path)

    def start(self) -> EmbeddedPool:
        from scheduler.backends.ray.cluster import LocalRayCluster
        from scheduler.control.options import ServerOptions
        from scheduler.control.root import Root
        from scheduler.control.wake import Pace

        config = self.config  # a bad file fails here, before anything starts
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.token = self._admin_token()
        port = self.opts.port or free_port()
        try:
            self.cluster = LocalRayCluster.from_config(config).start(progress=self.say)
            self.root = Root(
                ServerOptions(
                    db=str(self.data_dir / "pool.db"),
                    pool=str(self.config_path),
                    backend="ray",
                    backend_address=self.cluster.address,
                    checkpoint_root=str(self.data_dir / "checkpoints"),
                    admin_token=self.token,
                    pace=Pace(interval=self.opts.interval),
                ),
                say=self.say,
            )
            self.root.serve_in_thread(self.opts.host, port)
        except BaseException:
            self.stop()
            raise
        self.url = f"http://{self.opts.host}:{port}"
        return self

    def stop(self) -> None:
        if self.root is not None:
            self.root.stop()  # the HTTP server, then the loop (it disconnects from Ray)
            self.root = None
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None

    def __enter__(self) -> EmbeddedPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _admin_token(self) -> str:
        """The pool-admin secret, made once per data folder and kept there (mode 0600)."""
        path = self.data_dir / "admin-token"
        if path.exists():
            return path.read_text().strip()
        secret = new_secret()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret + "\n")
        return secret
