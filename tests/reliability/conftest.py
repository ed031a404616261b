"""A PostgreSQL server of the test's own, which the test may stop and start again."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from service.conftest import _as_postgres, _pg_bin, free_port


@dataclass
class OwnPostgres:
    data: Path
    sockets: Path
    port: int
    pg_ctl: str

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
        cmd = [self.pg_ctl, "-D", str(self.data), "-o", opts, "-l", str(self.sockets / "log"), "-w", "start"]
        subprocess.run(_as_postgres(cmd), check=True, capture_output=True)

    def stop(self, mode: str = "fast") -> None:
        cmd = [self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop"]
        subprocess.run(_as_postgres(cmd), capture_output=True)


@pytest.fixture
def own_pg() -> Iterator[OwnPostgres]:
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL not installed (bash .ci/run installs it)")
    tmp = Path(tempfile.mkdtemp(prefix="trainpool-own-pg-"))
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres", "postgres")
    pg = OwnPostgres(tmp / "data", tmp, free_port(), pg_ctl)
    cmd = [initdb, "-D", str(pg.data), "-A", "trust", "-U", "postgres", "--no-sync"]
    subprocess.run(_as_postgres(cmd), check=True, capture_output=True)
    pg.start()
    try:
        yield pg
    finally:
        pg.stop("immediate")
        shutil.rmtree(tmp, ignore_errors=True)
