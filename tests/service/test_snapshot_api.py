"""The pool's snapshot over the API, for what-if replays: what the loop decides on, with
no job's command, environment or image, and for an org-admin the other orgs under
pseudonyms; members get none."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scheduler.core import decide
from scheduler.store import view as viewstore
from values.errors import ConfigError
from values.snapshot_file import load

from .api_harness import Api, make_api

SECRET = {"SIM_DURATION": "5000", "WANDB_API_KEY": "hunter2"}


@pytest.fixture
def api(tmp_path: Path) -> Api:
    made = make_api(f"sqlite:///{tmp_path / 'pool.db'}")
    made.cycle()
    gang = {"flavor": "h100", "accelerators": 8, "replicas": 2}
    made.submit("member@a", name="mine", gang=gang, env=SECRET, command=["python", "train.py"])
    made.submit("member@b", org="b", name="secret-project", gang=gang, env=SECRET)
    made.cycle()
    made.submit("member@b", org="b", name="secret-followup", gang=gang, env=SECRET)  # waits
    made.cycle()
    return made


def test_a_pool_admin_gets_what_the_loop_decides_on_without_secrets(api: Api) -> None:
    resp = api.call("pool-admin", "GET", "/v1/snapshot")
    assert resp.status_code == 200, resp.text
    got = load(resp.text, "snapshot")
    assert got.scope == "pool" and got.taken_at == api.clock()
    assert "hunter2" not in resp.text and "train.py" not in resp.text
    snap = got.snapshot
    assert {r.spec.name for r in snap.running} == {"mine", "secret-project"}
    assert [p.spec.name for p in snap.pending] == ["secret-followup"]
    with api.ctx.db.read() as s:
        live = viewstore.build(s, api.ctx.pool, api.clock()).snapshot
    # The replay decides exactly as the loop would on the same moment.
    assert decide(snap, api.clock()).pending.keys() == decide(live, api.clock()).pending.keys()
    assert decide(snap, api.clock()).pending == decide(live, api.clock()).pending


def test_an_org_admin_sees_the_other_orgs_only_under_pseudonyms(api: Api) -> None:
    resp = api.call("org-admin@a", "GET", "/v1/snapshot")
    assert resp.status_code == 200, resp.text
    assert "secret-project" not in resp.text and "secret-followup" not in resp.text
    theirs = [j for j in api.call("pool-admin", "GET", "/v1/jobs").json() if j["org"] == "b"]
    assert theirs and not any(j["id"] in resp.text for j in theirs)
    assert '"b"' not in resp.text  # the org's name neither
    snap = load(resp.text, "snapshot").snapshot
    assert sorted(o.name for o in snap.orgs) == ["a", "org-1"]
    assert {r.spec.org for r in snap.running} == {"a", "org-1"}  # b's gang still holds its nodes
    assert [r.spec.name for r in snap.running if r.spec.org == "a"] == ["mine"]
    assert load(resp.text, "snapshot").scope == "org:a"


def test_members_get_no_snapshot(api: Api) -> None:
    resp = api.call("member@a", "GET", "/v1/snapshot")
    assert resp.status_code == 403 and "org-admins and pool-admins" in resp.text


def test_a_file_that_is_no_snapshot_is_named_with_its_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a trainpool snapshot"):
        load(json.dumps({"format": "other"}), "x.json")
    with pytest.raises(ConfigError, match=r"x.json: taken_at: must be a number"):
        load(json.dumps({"format": "trainpool-snapshot/1", "taken_at": "soon", "scope": "pool",
                         "snapshot": {"flavors": [], "nodes": [], "orgs": []}}), "x.json")  # fmt: skip


def test_whatif_replays_the_live_pool_with_a_change_and_saves_its_snapshot(api: Api, tmp_path: Path) -> None:
    import threading
    import time

    import uvicorn
    from typer.testing import CliRunner

    from scheduler.cli.main import app

    from .conftest import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(api.client.app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    try:
        env = {"TRAINPOOL_URL": f"http://127.0.0.1:{port}", "TRAINPOOL_TOKEN": api.tokens["org-admin@a"]}
        saved = tmp_path / "snap.json"
        args = ["whatif", "--add-nodes", "h100:2", "--hours", "2", "--save", str(saved), "-o", "json"]
        result = CliRunner().invoke(app, args, env=env)
        assert result.exit_code == 0, result.output
        out = json.loads(result.output[result.output.index("{") :])
        other = next(r for r in out["orgs"] if r["org"] == "org-1")  # b, as a's admin sees it
        assert (other["waiting"], other["started"], other["started_changed"]) == (1, 0, 1)
        assert "secret" not in saved.read_text()
        picture = tmp_path / "whatif.png"
        drawn = CliRunner().invoke(
            app,
            [
                "whatif",
                "--snapshot",
                str(saved),
                "--add-nodes",
                "h100:2",
                "--hours",
                "2",
                "--plot",
                str(picture),
            ],
        )
        assert drawn.exit_code == 0, drawn.output
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        again = CliRunner().invoke(app, ["whatif", "--snapshot", str(saved), "--drain", "nope"], env=env)
        assert again.exit_code == 1 and "--drain: no node 'nope'" in again.output
    finally:
        server.should_exit = True
