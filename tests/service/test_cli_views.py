"""What users see from the CLI, role by role: jobs with where and how long they run, jobs
addressed by name, cancelling many, logs of the attempt that has them, checkpoints, who
am I, the audit log, an org's standing (borrowed from whom, lent to whom), guarded quota
edits, usage by team and user, and `submit --wait` telling a failed job from a server
that does not answer."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click
import typer
import yaml

from scheduler.checkpoint_folder import job_folder
from scheduler.cli import complete
from scheduler.cli.client import Unreachable
from scheduler.cli.jobs_cmds import _patiently, job_row
from scheduler.cli.main import app
from scheduler.cli.times import span

from .cli_harness import Live, live_server  # noqa: F401  (the fixture "live")
from .conftest import free_port


def spec(tmp_path: Path, name: str, org: str = "a", *, replicas: int = 1, team: str | None = None,
         **env: str) -> Path:  # fmt: skip
    body: dict[str, Any] = {"name": name, "org": org,
                            "gang": {"flavor": "h100", "replicas": replicas, "accelerators": 8},
                            "env": {"SIM_DURATION": "100000", **env}}  # fmt: skip
    if team:
        body["team"] = team
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def submitted(live: Live, path: Path, token: str = "member@a") -> dict[str, Any]:
    code, out = live.run("submit", str(path), "-o", "json", token=token)
    assert code == 0, out
    return dict(json.loads(out))


def until(check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError("timed out")


def job(live: Live, job_id: str) -> dict[str, Any]:
    return dict(json.loads(live.run("jobs", "describe", job_id, "-o", "json", token="pool-admin")[1]))


def test_jobs_list_shows_flavor_accelerators_nodes_age_and_elapsed(live: Live, tmp_path: Path) -> None:
    made = submitted(live, spec(tmp_path, "wide", replicas=2))
    running = until(lambda: (j := job(live, made["id"]))["state"] == "RUNNING" and j)
    assert running["flavor"] == "h100" and running["accelerators"] == 16 and len(running["nodes"]) == 2
    assert running["attempt_started_at"] >= running["submitted_at"]
    code, out = live.run("jobs", "list", "--name", "wide")
    header = out.splitlines()[0].split()
    columns = ["id", "name", "org", "state", "flavor", "accelerators", "nodes", "age", "elapsed"]
    assert code == 0 and header[:9] == columns
    row = next(line.split() for line in out.splitlines() if made["id"] in line)
    assert row[4:6] == ["h100", "16"] and row[6] == ",".join(running["nodes"])
    live.run("jobs", "cancel", made["id"])


def test_job_row_ages_and_elapsed_time_of_the_current_attempt() -> None:
    base = {"spec": {"gang": {"flavors": ["h100", "a100"]}}, "submitted_at": 1000.0, "finished_at": None}
    pending = job_row({**base, "state": "PENDING", "attempt_started_at": None, "nodes": []}, now=1090)
    assert (pending["flavor"], pending["age"], pending["elapsed"]) == ("h100|a100", "1m 30s", "-")
    nodes = ["n1", "n2", "n3", "n4"]
    running = {**base, "state": "RUNNING", "attempt_started_at": 4600.0, "nodes": nodes, "flavor": "a100"}
    ran = job_row(running, now=1000 + 3 * 3600 + 600)
    assert (ran["flavor"], ran["nodes"], ran["age"], ran["elapsed"]) == (
        "a100",
        "n1,n2 +2",
        "3h 10m",
        "2h 10m",
    )
    done = job_row({**base, "state": "FAILED", "attempt_started_at": 1100.0, "finished_at": 1160.0,
                    "nodes": []}, now=99999)  # fmt: skip
    assert done["elapsed"] == "1m"


def test_describe_shows_local_iso_times_and_json_keeps_seconds(live: Live, tmp_path: Path) -> None:
    made = submitted(live, spec(tmp_path, "timed", SIM_DURATION="1"))
    code, out = live.run("jobs", "describe", made["id"])
    shown = yaml.safe_load(out)
    assert code == 0 and isinstance(shown["submitted_at"], str)
    assert shown["submitted_at"][:4].isdigit() and shown["submitted_at"][-6] in "+-"  # 2026-...+00:00
    assert isinstance(job(live, made["id"])["submitted_at"], float)
    code, out = live.run("jobs", "events", made["id"])
    assert code == 0 and "." not in out.splitlines()[1].split()[1]  # a time of day, not 1000012.5


def test_jobs_are_addressed_by_name_within_an_org(live: Live, tmp_path: Path) -> None:
    older = submitted(live, spec(tmp_path, "same-name", SIM_DURATION="1"))
    until(lambda: live.api.clock() > older["submitted_at"])  # newer by its submit time, not by a tie
    newer = submitted(live, spec(tmp_path, "same-name", SIM_DURATION="1"))
    theirs = submitted(live, spec(tmp_path, "same-name", "b", SIM_DURATION="1"), token="member@b")
    code, out = live.run("jobs", "describe", "same-name", "-o", "json")
    assert code == 0 and json.loads(out)["id"] == newer["id"] != older["id"]
    code, out = live.run("jobs", "describe", "same-name", "-o", "json", token="member@b")
    assert code == 0 and json.loads(out)["id"] == theirs["id"]  # b's own, not a's
    code, out = live.run("jobs", "describe", "same-name", token="pool-admin")
    assert code == 1 and "orgs a, b: add --org" in out
    code, out = live.run("jobs", "events", "same-name", "--org", "b", "-o", "json", token="pool-admin")
    assert code == 0 and json.loads(out)[0]["event"] == "submitted"
    code, out = live.run("jobs", "describe", "no-such-job")
    assert code == 1 and "job 'no-such-job' not found" in out


def test_cancel_takes_several_jobs_or_filters(live: Live, tmp_path: Path) -> None:
    one, two = (submitted(live, spec(tmp_path, f"batch-{i}")) for i in range(2))
    code, out = live.run("jobs", "cancel", one["id"], "batch-1")
    assert code == 0 and f"{one['id']} CANCELLED" in out and f"{two['id']} CANCELLED" in out
    sweep = [submitted(live, spec(tmp_path, "sweep")) for _ in range(3)]
    keep = submitted(live, spec(tmp_path, "keep"))
    code, out = live.run("jobs", "cancel", "--name", "sweep")
    assert code == 0 and all(f"{s['id']} CANCELLED" in out for s in sweep) and keep["id"] not in out
    assert job(live, keep["id"])["state"] != "CANCELLED"
    code, out = live.run("jobs", "cancel", "--name", "sweep")
    assert code == 0 and "no unfinished job matches" in out
    code, out = live.run("jobs", "cancel", "--state", "SUCCEEDED")
    assert code == 1 and "--state: 'SUCCEEDED' is not one of PENDING" in out
    code, out = live.run("jobs", "cancel")
    assert code == 1 and "nothing to cancel" in out
    live.run("jobs", "cancel", keep["id"])


def test_logs_default_to_the_latest_attempt_that_has_them(live: Live, tmp_path: Path) -> None:
    path = tmp_path / "flaky.yaml"
    path.write_text(yaml.safe_dump({
        "name": "flaky", "org": "a", "gang": {"flavor": "h100", "accelerators": 8},
        "env": {"SIM_DURATION": "2", "SIM_FAIL_ATTEMPTS": "1"},
        "restart": {"max_restarts": 3, "backoff_seconds": 80000, "backoff_max_seconds": 80000},
    }))  # fmt: skip
    made = submitted(live, path)
    until(lambda: job(live, made["id"])["attempt"] == 1)  # attempt 0 failed; 1 waits out its backoff
    code, out = live.run("jobs", "logs", made["id"])
    assert code == 0 and "attempt 1 has no logs yet; attempt 0's:" in out and "failed" in out
    code, out = live.run("jobs", "logs", made["id"], "--attempt", "1")
    assert code == 1 and "no logs for attempt 1" in out
    live.run("jobs", "cancel", made["id"])


def test_checkpoints_whoami_and_audit(live: Live, tmp_path: Path) -> None:
    made = submitted(live, spec(tmp_path, "ckpt"))
    folder = job_folder(live.api.ctx.checkpoint_root, made["id"])
    for step in (5, 10):
        resp = live.api.call("member@a", "POST", f"/v1/jobs/{made['id']}/checkpoints",
                             {"path": f"{folder}/step-{step}", "step": step})  # fmt: skip
        assert resp.status_code == 201, resp.text
    code, out = live.run("jobs", "checkpoints", "ckpt", "-o", "json")
    assert code == 0 and [c["step"] for c in json.loads(out)] == [10, 5]
    live.run("jobs", "cancel", made["id"])

    code, out = live.run("whoami", token="org-admin@a")
    assert code == 0 and "role:    org-admin" in out and "org:     a" in out and live.url in out
    code, out = live.run("whoami", "-o", "json", token="pool-admin")
    assert code == 0 and json.loads(out)["role"] == "pool-admin" and json.loads(out)["expires_at"] is None

    code, out = live.run("quota", "set", "b", "h100", "--borrowing-limit", "9", token="pool-admin")
    assert code == 0, out
    code, out = live.run("audit", "--action", "quota.", "-o", "json", token="pool-admin")
    assert code == 0 and json.loads(out)[0]["target"] == "b/h100"
    assert {a["action"] for a in json.loads(out)} == {"quota.set"}
    code, out = live.run("audit", "--action", "quota.set", token="pool-admin")
    assert code == 0 and "b/h100" in out and "borrowing_limit" in out
    code, out = live.run("audit", token="org-admin@a")
    assert code == 1 and "pool-admin" in out


def test_quota_show_tells_who_borrows_from_whom_and_guarded_edits(live: Live, tmp_path: Path) -> None:
    # b (nominal 16) runs 24: 8 borrowed, all of it a's idle quota (the pool has none unassigned).
    big = submitted(live, spec(tmp_path, "borrower", "b", replicas=3), token="member@b")
    until(lambda: job(live, big["id"])["state"] == "RUNNING")
    code, out = live.run("quota", "show", "b", "-o", "json", token="member@b")
    b = next(r for r in json.loads(out) if r["flavor"] == "h100")
    assert code == 0 and (b["in_use"], b["borrowed"], b["borrowed_from"]) == (24, 8, {"a": 8})
    code, out = live.run("quota", "show", "a", token="org-admin@a")
    row = next(line for line in out.splitlines() if line.strip().startswith("h100"))
    assert code == 0 and "b 8" in row  # lent to b

    code, out = live.run("quota", "set", "a", "h100", "--nominal", "24", token="pool-admin")
    assert code == 1 and "would sum to 40, and the pool has 32" in out and "--force" in out
    code, out = live.run("quota", "set", "a", "h100", "--nominal", "24", "--force", token="pool-admin")
    assert code == 0 and "warning:" in out and "nominal 24" in out
    code, out = live.run("quota", "set", "a", "h100", "--nominal", "16", token="pool-admin")
    assert code == 0 and "warning" not in out  # lowering is always allowed
    live.run("jobs", "cancel", big["id"], token="member@b")


def test_usage_by_team_and_by_user(live: Live, tmp_path: Path) -> None:
    code, out = live.run("teams", "set", "a", "vision", token="org-admin@a")
    assert code == 0, out
    made = submitted(live, spec(tmp_path, "teamed", team="vision", SIM_DURATION="30"))
    # Its own teamless job: the live pool is shared, and which other tests ran before varies.
    loose = submitted(live, spec(tmp_path, "teamless", SIM_DURATION="30"))
    until(lambda: job(live, made["id"])["state"] == "SUCCEEDED", timeout=30)
    until(lambda: job(live, loose["id"])["state"] == "SUCCEEDED", timeout=30)
    code, out = live.run("usage", "--by", "team", "--since", "0", "-o", "json", token="org-admin@a")
    teams = {r["team"]: r["accelerator_hours"] for r in json.loads(out)}
    assert code == 0 and teams["vision"] > 0
    code, out = live.run("usage", "--by", "team", "--since", "0", token="org-admin@a")
    assert "(no team)" in out and "vision" in out
    code, out = live.run("usage", "--since", "0", "-o", "json", token="org-admin@a")
    (mine,) = json.loads(out)
    assert 0 < mine["effective_time_ratio"] <= 1 and mine["lost_accelerator_hours"]["startup"] >= 0
    code, out = live.run("usage", "--since", "0", token="org-admin@a")
    assert code == 0 and "effective_time_ratio" in out.splitlines()[0]
    code, out = live.run("usage", "--by", "user", "--since", "0", "-o", "json", token="pool-admin")
    users = {(r["org"], r["user"]) for r in json.loads(out)}
    assert code == 0 and ("a", "t") in users  # the harness names its tokens "t"
    code, out = live.run("usage", "--by", "person", token="pool-admin")
    assert code == 1 and "--by: 'person' is not one of org, team, flavor, user" in out


def test_submit_wait_exit_codes_tell_a_failed_job_from_an_unreachable_server(
    live: Live, tmp_path: Path
) -> None:
    failing = spec(tmp_path, "doomed", SIM_DURATION="1", SIM_EXIT_CODE="3")
    failing.write_text(failing.read_text() + "restart: {max_restarts: 0}\n")
    code, out = live.run("submit", str(failing), "--wait")
    assert code == 1 and "waiting for it to finish" in out and "FAILED" in out
    code, out = live.run("submit", str(failing), "--wait", "--reconnect", "1s",
                         TRAINPOOL_URL=f"http://127.0.0.1:{free_port()}")  # fmt: skip
    assert code == 3 and "trying again for up to 1s" in out and "gave up" in out


def test_a_lost_answer_is_retried_until_the_server_answers() -> None:
    answers: list[Any] = [Unreachable("refused"), Unreachable("refused"), {"id": "j-1"}]

    def call() -> Any:
        got = answers.pop(0)
        if isinstance(got, Exception):
            raise got
        return got

    assert _patiently(call, patience=30) == {"id": "j-1"} and not answers


def _commands() -> list[tuple[str, click.Command]]:
    root = typer.main.get_command(app)
    out: list[tuple[str, click.Command]] = []

    def walk(prefix: str, cmd: click.Command) -> None:
        out.append((prefix, cmd))
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                walk(f"{prefix} {name}".strip(), sub)

    walk("", root)
    return out


def test_every_command_has_a_help_line_and_each_short_flag_one_meaning() -> None:
    meanings: dict[str, set[str]] = {}
    for name, cmd in _commands():
        if name:
            assert (cmd.help or "").strip(), f"`trainpool {name}` has no help line"
        for param in cmd.params:
            for opt in getattr(param, "opts", []) + getattr(param, "secondary_opts", []):
                if opt.startswith("-") and not opt.startswith("--"):
                    meanings.setdefault(opt, set()).add(param.name or "")
    assert {flag: names for flag, names in meanings.items() if len(names) > 1} == {}


def test_completion_offers_the_servers_jobs_nodes_and_orgs(
    live: Live, tmp_path: Path, monkeypatch: Any
) -> None:
    made = submitted(live, spec(tmp_path, "complete-me", SIM_DURATION="1"))
    monkeypatch.setenv("TRAINPOOL_URL", live.url)
    monkeypatch.setenv("TRAINPOOL_TOKEN", live.api.tokens["member@a"])
    ctx = click.Context(typer.main.get_command(app))
    assert made["id"] in complete.jobs(ctx, "j-") and "complete-me" in complete.jobs(ctx, "complete")
    assert complete.nodes(ctx, "h100-0") == ["h100-00", "h100-01", "h100-02", "h100-03"]
    assert complete.orgs(ctx, "") == ["a"]  # a member sees its own org only
    monkeypatch.setenv("TRAINPOOL_URL", f"http://127.0.0.1:{free_port()}")
    assert complete.jobs(ctx, "") == []  # a server that does not answer completes nothing


def test_span_reads_as_two_units() -> None:
    assert [span(s) for s in (0, 59, 61, 3600, 7800, 90000)] == [
        "0s",
        "59s",
        "1m 1s",
        "1h",
        "2h 10m",
        "1d 1h",
    ]
