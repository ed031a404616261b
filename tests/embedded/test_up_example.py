"""What `trainpool up` suggests typing: the exports that reach its server, and a first
job that exists and can run on the pool `up` starts (validate --pool's check, the core's
never_runs). No Ray cluster starts here; tests/embedded/test_up_and_demo.py runs it."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from chart.test_notes import problem
from typer.testing import CliRunner

from scheduler.cli.embedded_cmds import instructions
from scheduler.cli.main import app
from scheduler.config import job_problems, job_warnings, load_job_spec, load_pool_config
from scheduler.embedded.runtime import EXAMPLE_JOB, default_config_path

ROOT = Path(__file__).resolve().parents[2]
URL = "http://127.0.0.1:8642"


def _commands(lines: list[str]) -> list[list[str]]:
    return [shlex.split(line, comments=True) for line in lines if line.startswith("  ")]


def _submitted(lines: list[str], cwd: Path) -> Path:
    submits = [c for c in _commands(lines) if c[:2] == ["trainpool", "submit"]]
    assert len(submits) == 1, lines
    assert problem(submits[0][1:]) is None  # a real command with real options
    return cwd / submits[0][2]


@pytest.mark.parametrize("cwd", [ROOT, Path("/")], ids=["in-the-repository", "elsewhere"])
def test_up_suggests_the_example_job_by_a_path_that_exists(tmp_path: Path, cwd: Path) -> None:
    lines = instructions(URL, tmp_path / "my data", default_config_path(), True, cwd=cwd)
    job = _submitted(lines, cwd)
    assert job.is_file() and job.resolve() == (ROOT / EXAMPLE_JOB).resolve()
    if cwd == ROOT:
        assert job == cwd / "examples/jobs/embedded-hello.yaml"  # short, as the user is there
    commands = _commands(lines)
    assert ["export", f"TRAINPOOL_URL={URL}"] in commands
    # The token file's path is quoted for the shell: the folder may have spaces.
    assert f"  export TRAINPOOL_TOKEN=$(cat '{tmp_path / 'my data' / 'admin-token'}')" in lines
    assert ["trainpool", "nodes", "list"] in commands and problem(["nodes", "list"]) is None


def test_the_example_job_can_run_on_the_pool_up_starts() -> None:
    pool = load_pool_config(default_config_path())
    spec = load_job_spec(ROOT / EXAMPLE_JOB)
    assert job_problems(pool, spec) == [] and job_warnings(spec) == []
    assert spec.org in {o.name for o in pool.orgs} and spec.gang.flavors == ("sim-gpu",)
    result = CliRunner().invoke(
        app, ["validate", "--pool", str(default_config_path()), str(ROOT / EXAMPLE_JOB)]
    )
    assert result.exit_code == 0, result.output
    assert "OK (job 'hello-embedded' of org research: 2 x 2 sim-gpu)" in result.stdout
    assert "warning" not in result.stdout


def test_up_with_a_pool_of_ones_own_suggests_checking_a_job_against_it(tmp_path: Path) -> None:
    config = tmp_path / "my pool.yaml"
    lines = instructions(URL, tmp_path, config, False, cwd=ROOT)
    assert not any("embedded-hello" in line for line in lines)
    validate = next(c for c in _commands(lines) if c[:2] == ["trainpool", "validate"])
    assert validate[2:5] == ["--pool", str(config), "JOB.yaml"]
    assert problem(validate[1:5]) is None
