"""The CLI against a live server: tables, -o json/yaml/csv, one-line errors, contexts."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from scheduler.cli.jobs_cmds import new_lines
from scheduler.cli.main import app

from .cli_harness import Live, live_server, runner  # noqa: F401  (the fixture "live")
from .conftest import free_port

JOB = """
name: cli-job
org: a
gang: {flavor: h100, replicas: 1, accelerators: 8}
env: {SIM_DURATION: "5"}
"""


@pytest.fixture
def job_file(tmp_path: Path) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(JOB)
    return path


def test_submit_list_describe_and_events(live: Live, job_file: Path) -> None:
    code, out = live.run("submit", str(job_file), "-o", "json")
    assert code == 0, out
    job = json.loads(out)
    code, out = live.run("jobs", "list")
    assert code == 0 and job["id"] in out and "cli-job" in out
    code, out = live.run("jobs", "describe", job["id"])
    assert code == 0 and yaml.safe_load(out)["spec"]["name"] == "cli-job"
    code, out = live.run("jobs", "events", job["id"], "-o", "yaml")
    assert code == 0 and yaml.safe_load(out)[0]["event"] == "submitted"


def test_submit_wait_follows_the_job_to_its_end(live: Live, job_file: Path) -> None:
    code, out = live.run("submit", str(job_file), "--wait", "-o", "json")
    assert code == 0, out
    assert '"state": "SUCCEEDED"' in out
    job_id = json.loads(out[out.index("{") :])["id"]
    code, out = live.run("jobs", "logs", job_id)
    assert code == 0 and "launched on" in out and "succeeded" in out


def test_logs_follow_prints_each_line_once_until_the_job_ends(live: Live, job_file: Path) -> None:
    code, out = live.run("submit", str(job_file), "-o", "json")
    job_id = json.loads(out)["id"]
    while live.run("jobs", "logs", job_id)[0] != 0:  # no logs until it launches
        time.sleep(0.05)
    code, out = live.run("jobs", "logs", job_id, "--follow", "--replica", "0")
    assert code == 0, out
    lines = out.strip().splitlines()
    assert lines[0].split(" ", 1)[1].startswith("launched on") and "succeeded" in lines[-1]
    assert len(lines) == len(set(lines)), "a line printed twice"


def test_tokens_made_with_a_lifetime_show_their_expiry(live: Live) -> None:
    code, out = live.run("tokens", "create", "--role", "member", "--org", "a", "--ttl", "2h", "-o", "json",
                         token="org-admin@a")  # fmt: skip
    assert code == 0, out
    made = json.loads(out)
    assert made["expires_at"] - made["created_at"] == 7200
    code, out = live.run(
        "tokens", "create", "--role", "member", "--org", "a", "--ttl", "soon", token="org-admin@a"
    )
    assert code == 1 and "--ttl: 'soon' is not a duration" in out


def test_new_lines_after_an_overlapping_tail() -> None:
    assert new_lines(["a", "b", "c"], ["b", "c", "d", "e"]) == ["d", "e"]
    assert new_lines(["a", "b"], ["a", "b"]) == []
    assert new_lines([], ["x"]) == ["x"]
    assert new_lines(["a"], ["z"]) == ["z"], "no overlap: the tail moved past everything shown"


def test_server_errors_are_one_line_and_exit_1(live: Live, job_file: Path) -> None:
    code, out = live.run("submit", str(job_file), "-o", "json")
    job_id = json.loads(out)["id"]
    assert live.run("jobs", "cancel", job_id)[0] == 0
    code, out = live.run("jobs", "cancel", job_id)
    assert code == 1 and out.strip().startswith("error:") and "HTTP 409" in out
    assert len(out.strip().splitlines()) == 1
    code, out = live.run("jobs", "describe", "j-missing", token="member@b")
    assert code == 1 and "not found" in out


def test_a_bad_job_file_names_the_field(live: Live, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\norg: a\ngang: {flavor: h100, replicas: 0}\n")
    code, out = live.run("submit", str(bad))
    assert code == 1 and "gang.replicas" in out and "Traceback" not in out


def test_an_unreachable_server_exits_3_not_1(live: Live) -> None:
    code, out = live.run("jobs", "list", TRAINPOOL_URL=f"http://127.0.0.1:{free_port()}")
    assert code == 3 and "cannot reach the server" in out


def test_contexts_from_the_config_file(live: Live, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "current-context": "broken",
                "contexts": {
                    "broken": {"url": f"http://127.0.0.1:{free_port()}"},
                    "admin": {"url": live.url, "token": live.api.tokens["pool-admin"]},
                },
            }
        )
    )
    env = {"TRAINPOOL_CONFIG": str(config)}
    result = runner.invoke(app, ["orgs", "--context", "admin", "-o", "json"], env=env)
    assert result.exit_code == 0, result.output
    assert {o["name"] for o in json.loads(result.output)} == {"a", "b"}
    assert runner.invoke(app, ["orgs"], env=env).exit_code == 3  # the current context is unreachable
    result = runner.invoke(app, ["orgs", "--context", "nope"], env=env)
    assert result.exit_code == 1 and "no context 'nope'" in result.output


def test_admin_commands(live: Live) -> None:
    code, out = live.run("quota", "set", "b", "h100", "--nominal", "12", token="pool-admin")
    assert code == 0 and "nominal 12" in out
    code, out = live.run("quota", "show", "b", "-o", "json", token="member@b")
    assert json.loads(out)[0]["nominal"] == 12
    code, out = live.run("quota", "set", "b", "h100", "--nominal", "1", token="org-admin@b")
    assert code == 1 and "pool-admin" in out
    code, out = live.run("tokens", "create", "--role", "member", "--org", "b", token="org-admin@b")
    assert code == 0 and "secret (shown once): tp_" in out
    code, out = live.run("usage", "-o", "csv", "--since", "0", token="pool-admin")
    assert code == 0 and out.splitlines()[0] == "org,accelerator_hours,effective_time_ratio"
    code, out = live.run("nodes", "cordon", "h100-03", token="pool-admin")
    assert code == 0 and "cordoned" in out


def test_quota_set_changes_only_what_it_is_given(live: Live) -> None:
    def quota() -> dict[str, object]:
        code, out = live.run("quota", "show", "a", "-o", "json", token="pool-admin")
        assert code == 0, out
        row = next(q for q in json.loads(out) if q["flavor"] == "h100")
        return {k: row[k] for k in ("nominal", "borrowing_limit", "lending_limit")}

    code, out = live.run(
        "quota", "set", "a", "h100", "--nominal", "16", "--borrowing-limit", "8", "--lending-limit", "4",
        token="pool-admin",
    )  # fmt: skip
    assert code == 0, out
    code, out = live.run("quota", "set", "a", "h100", "--nominal", "12", token="pool-admin")
    assert code == 0 and quota() == {"nominal": 12, "borrowing_limit": 8, "lending_limit": 4}
    code, out = live.run("quota", "set", "a", "h100", "--no-borrowing-limit", token="pool-admin")
    assert code == 0 and quota() == {"nominal": 12, "borrowing_limit": None, "lending_limit": 4}
    code, out = live.run("quota", "set", "a", "h100", token="pool-admin")
    assert code == 1 and "nothing to change" in out
    code, out = live.run("quota", "set", "a", "h100", "--lending-limit", "30", token="pool-admin")
    assert code == 1 and "lending_limit" in out and quota()["lending_limit"] == 4  # nothing lost


def test_quota_apply_and_teams(live: Live, tmp_path: Path) -> None:
    pool = tmp_path / "pool.yaml"
    pool.write_text(
        "flavors: [{name: h100}]\n"
        "orgs:\n"
        "  - {name: a, quotas: {h100: {nominal: 10}}, teams: [{name: vision, weight: 2}]}\n"
        "  - {name: c, quotas: {h100: {nominal: 0, borrowing_limit: 4}}}\n"
    )
    code, out = live.run("quota", "apply", str(pool), token="pool-admin")
    assert code == 0, out
    assert "c: created" in out and "a/h100" in out
    code, out = live.run("teams", "list", "a", "-o", "json")
    assert {"org": "a", "name": "vision", "weight": 2.0} in json.loads(out)
    code, out = live.run("quota", "apply", str(pool), token="pool-admin")
    assert code == 0 and out.strip() == ""  # already applied: nothing to change
    code, out = live.run("teams", "set", "a", "nlp", "--weight", "3", token="org-admin@a")
    assert code == 0 and "weight 3.0" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--db", "mysql://u@h/db"], "--db: unsupported database 'mysql'"),
        (["--db", "postgresql://u@127.0.0.1:1/db"], "--db: cannot use the database"),
        (["--pool", "/nonexistent/pool.yaml"], "/nonexistent/pool.yaml"),
    ],
)
def test_server_refuses_bad_options_in_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    if "--db" not in args:
        args = ["--db", str(tmp_path / "pool.db"), *args]
    result = runner.invoke(app, ["server", *args], env={"XDG_DATA_HOME": str(tmp_path)})
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
