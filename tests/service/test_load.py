"""Load: 50 concurrent clients against a real server process, on SQLite and PostgreSQL.

Asserts correctness under load (no errors, each job stored once); the rate and
latency are printed (pytest -s), not asserted: on a shared 2-core machine they
measure the neighbours as much as the server.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import select

from scheduler.api.loadgen import run_load
from scheduler.store.db import open_database
from scheduler.store.tables import JobRow

from .server_proc import ADMIN, ServerProc

JOBS = 1000


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_fifty_clients_submit_without_errors(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    db = (
        f"sqlite:///{tmp_path / 'pool.db'}" if backend == "sqlite" else str(request.getfixturevalue("pg_url"))
    )
    server = ServerProc(db, tmp_path)
    server.start("--interval", "1")
    try:
        result = run_load(server.url, ADMIN, jobs=JOBS, clients=50, org="a", flavor="h100")
    finally:
        server.stop()
    print(f"\n{backend}: {json.dumps(result.summary())}")
    assert result.errors == 0, result.first_errors
    assert result.submitted == JOBS
    store = open_database(db)
    with store.read() as s:
        stored = s.exec(select(func.count()).select_from(JobRow)).one()
        distinct = s.exec(select(func.count(func.distinct(JobRow.client_request_id)))).one()
    store.dispose()
    assert stored == distinct == JOBS
