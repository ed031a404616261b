"""Fixtures for the service tests: a database on SQLite and on a real PostgreSQL.

PostgreSQL comes from ``TRAINPOOL_TEST_PG_URL`` if set, else a throwaway cluster is
made with initdb/pg_ctl on 127.0.0.1 and a free port (as user postgres when run as
root); where neither works the PostgreSQL variants are skipped, with the reason.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@dataclass
class LocalPostgres:
    """A throwaway PostgreSQL cluster on 127.0.0.1 that a test may stop and start again."""

    data: Path
    sockets: Path
    port: int
    pg_ctl: str
    options: str = ""

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c fsync=off {self.options}"
        cmd = [self.pg_ctl, "-D", str(self.data), "-o", opts, "-l", str(self.sockets / "log"), "-w", "start"]
        subprocess.run(_as_postgres(cmd), check=True, capture_output=True)

    def stop(self, mode: str = "fast") -> None:
        cmd = [self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop"]
        subprocess.run(_as_postgres(cmd), capture_output=True)

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.sockets, ignore_errors=True)


def local_postgres(prefix: str, options: str = "") -> LocalPostgres:
    """initdb and start a new cluster; skips the test where PostgreSQL is not installed."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL not installed (bash .ci/run installs it) and TRAINPOOL_TEST_PG_URL unset")
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres", "postgres")
    pg = LocalPostgres(tmp / "data", tmp, free_port(), pg_ctl, options)
    cmd = [initdb, "-D", str(pg.data), "-A", "trust", "-U", "postgres", "--no-sync"]
    subprocess.run(_as_postgres(cmd), check=True, capture_output=True)
    pg.start()
    return pg


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    url = os.environ.get("TRAINPOOL_TEST_PG_URL")
    if url:
        yield url
        return
    pg = local_postgres("trainpool-pg-", "-c max_connections=200")
    try:
        yield pg.url
    finally:
        pg.remove()


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh, empty database on the PostgreSQL server, dropped afterwards."""
    import psycopg

    name = "tp_" + secrets.token_hex(5)
    plain = pg_admin_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    base = pg_admin_url.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'trainpool.db'}"
    return str(request.getfixturevalue("pg_url"))
