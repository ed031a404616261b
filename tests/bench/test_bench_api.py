"""`trainpool bench api` end to end: a real server process on SQLite, real HTTP load."""

import json

import pytest
from typer.testing import CliRunner

from scheduler.cli.main import app


@pytest.mark.slow
def test_bench_api_submits_every_job_without_errors() -> None:
    result = CliRunner().invoke(app, ["bench", "api", "--jobs", "200", "--clients", "8", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert summary["submitted"] == 200
    assert summary["errors"] == 0
    assert summary["submissions_per_second"] > 0
    assert 0 < summary["p50_ms"] <= summary["p99_ms"]
