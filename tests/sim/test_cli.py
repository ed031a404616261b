"""`trainpool sim` from the command line: JSON, Markdown, plots, and user errors."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from scheduler.cli.main import app

from .helpers import random_rows, write_quotas, write_vc_trace

runner = CliRunner()


def files(tmp_path: Path) -> tuple[Path, Path]:
    trace = write_vc_trace(tmp_path / "t.csv", random_rows(40, ("aa", "bb"), seed=2))
    return trace, write_quotas(tmp_path / "q.csv", {"aa": 2, "bb": 1})


def test_json_has_one_object_per_policy_and_the_failure_model(tmp_path: Path) -> None:
    trace, quotas = files(tmp_path)
    res = runner.invoke(
        app,
        [
            "sim",
            "--trace",
            str(trace),
            "--quotas",
            str(quotas),
            "--policy",
            "all",
            "--json",
            "--load",
            "0.8",
        ],
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert [p["policy"] for p in doc["policies"]] == ["fifo", "slurm", "kueue", "tiresias", "trainpool"]
    assert "Modelled, not measured" in doc["failure_model"]
    for p in doc["policies"]:
        assert p["completed"] + sum(p["rejected"].values()) == p["jobs"] == 40
        assert p["utilization"]["bound"] == 0.8


def test_out_dir_gets_summary_table_and_plots(tmp_path: Path) -> None:
    trace, quotas = files(tmp_path)
    out = tmp_path / "out"
    res = runner.invoke(
        app,
        [
            "sim",
            "--trace",
            str(trace),
            "--quotas",
            str(quotas),
            "--policy",
            "fifo,trainpool",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "| trainpool |" in res.output and "failure model" in res.output
    names = {p.name for p in out.iterdir()}
    assert {"summary.json", "summary.md", "jct_cdf.png", "utilization.png", "share_fifo.png"} <= names
    assert (out / "jct_cdf.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_inputs_are_one_line_errors_naming_the_option(tmp_path: Path) -> None:
    trace, quotas = files(tmp_path)
    base = ["--trace", str(trace), "--quotas", str(quotas)]
    cases = [
        (["--trace", str(tmp_path / "nope.csv"), "--quotas", str(quotas)], "--trace:"),
        ([*base, "--policy", "magic"], "--policy: unknown policy 'magic'"),
        ([*base, "--failures", "often"], "--failures: unknown model"),
        ([*base, "--load", "0"], "--load: must be > 0"),
        (["--trace", str(trace)], "give --pool FILE, --quotas FILE, or --nodes N"),
    ]
    for args, message in cases:
        res = runner.invoke(app, ["sim", *args])
        assert res.exit_code == 2, res.output
        assert message in res.output and "Traceback" not in res.output


def test_without_a_quota_file_the_nodes_are_split_among_the_orgs(tmp_path: Path) -> None:
    trace, _ = files(tmp_path)
    res = runner.invoke(app, ["sim", "--trace", str(trace), "--nodes", "5", "--json", "--failures", "none"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["orgs"] == {"aa": 16, "bb": 16}


def test_a_pool_config_file_sets_the_nodes_and_quotas(tmp_path: Path) -> None:
    trace, _ = files(tmp_path)
    pool = tmp_path / "pool.yaml"
    pool.write_text(
        "flavors: [{name: h100}]\n"
        "orgs:\n  - {name: aa, quotas: {h100: {nominal: 16}}}\n"
        "node_groups:\n  - {flavor: h100, count: 3, accelerators: 8}\n"
    )
    res = runner.invoke(
        app,
        [
            "sim",
            "--trace",
            str(trace),
            "--pool",
            str(pool),
            "--json",
            "--failures",
            "none",
        ],
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["capacity"] == 24 and doc["orgs"] == {"aa": 16, "bb": 0}
