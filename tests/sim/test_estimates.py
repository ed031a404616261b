"""Start estimates in the simulator: recorded when a job starts waiting (and an hour
later), scored against its actual start, reported per policy."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scheduler.cli.main import app
from scheduler.sim.accuracy import accuracy
from scheduler.sim.record import EstimateRecord, JobRecord
from scheduler.sim.run import SimRequest, run

from .helpers import random_rows, write_quotas, write_vc_trace


def one_node(tmp_path: Path, rows: list[tuple[str, str, float, int, float]]) -> SimRequest:
    trace = write_vc_trace(tmp_path / "t.csv", rows)
    quotas = write_quotas(tmp_path / "q.csv", {"aa": 1})
    return SimRequest(trace=trace, quotas=quotas, policy="trainpool", failures="none")


def test_a_queue_behind_one_node_is_estimated_from_limits_that_include_the_restart_overhead(
    tmp_path: Path,
):
    # One 8-GPU node. j0 (1000 s) starts at 0; j1 (500 s) and j2 (300 s) arrive at 10 and
    # 20 and are first estimated by the cycle at 60, from limits = run time + 300 s. The
    # shorter j2 goes first (response ratio): it reserves the node for 1300, when j0's
    # limit ends, and j1 follows when j2's does, 1900. They start at 1000 and 1300: each
    # estimate is pessimistic by the overheads it counted (300 s and 600 s).
    req = one_node(tmp_path, [("0", "aa", 0, 8, 1000), ("1", "aa", 10, 8, 500), ("2", "aa", 20, 8, 300)])
    result = run(req).results[0]
    shown = {j.id: [(e.kind, e.made_at, e.start, e.basis) for e in j.estimates] for j in result.jobs}
    starts = {j.id: (j.first_start, shown[j.id]) for j in result.jobs}
    assert starts == {
        "j0": (0.0, []),
        "j1": (1300.0, [("submit", 60.0, 1900.0, "replay")]),
        "j2": (1000.0, [("submit", 60.0, 1300.0, "reservation")]),
    }  # fmt: skip
    got = accuracy(result.jobs, "submit")
    assert got["all"]["jobs"] == got["waited_over_10m"]["jobs"] == 2
    assert got["all"]["bias_s"] == pytest.approx(450.0)
    assert got["all"]["median_abs_error_s"] == pytest.approx(450.0)
    assert got["all"]["within_15m"] == 1.0
    # Leads of 940 and 1240 s: neither error is within 25% of its lead (235 and 310 s).
    assert got["all"]["within_25pct"] == 0.0
    assert got["all"]["median_rel_error"] == pytest.approx((300 / 940 + 600 / 1240) / 2)
    assert accuracy(result.jobs, "later")["all"]["jobs"] == 0  # nobody waited an hour


def record(submit: float, start: float, *estimates: EstimateRecord) -> JobRecord:
    return JobRecord("j", "a", submit, 100.0, 8, 1, first_start=start, estimates=list(estimates))


def test_errors_are_signed_pessimistic_positive_and_relative_to_the_lead():
    jobs = [
        record(0, 3600, EstimateRecord("submit", 0, 4500, "replay", 5000)),  # +900 s, lead 3600
        record(0, 3600, EstimateRecord("submit", 0, 1800, "replay", 3000)),  # -1800 s, out of range
        record(0, 300, EstimateRecord("submit", 0, 300, "backoff")),  # exact, a short wait
        record(0, 7200, EstimateRecord("submit", 0, None)),  # unknown
        record(0, 100),  # started before any estimate
    ]
    got = accuracy(jobs, "submit")
    long, every = got["waited_over_10m"], got["all"]
    assert (long["jobs"], long["unknown"], every["jobs"], every["unknown"]) == (2, 1, 3, 1)
    assert long["bias_s"] == pytest.approx((900 - 1800) / 2)
    assert long["median_abs_error_s"] == pytest.approx(1350)
    assert long["median_rel_error"] == pytest.approx((0.25 + 0.5) / 2)
    assert long["within_25pct"] == 0.5 and long["within_15m"] == 0.5
    assert long["in_range"] == 0.5
    assert every["within_15m"] == pytest.approx(2 / 3)


def test_the_report_scores_estimates_on_a_small_trace_and_they_are_plausible(tmp_path: Path):
    trace = write_vc_trace(tmp_path / "t.csv", random_rows(60, ("aa", "bb"), seed=2))
    quotas = write_quotas(tmp_path / "q.csv", {"aa": 1, "bb": 1})
    res = CliRunner().invoke(
        app, ["sim", "--trace", str(trace), "--quotas", str(quotas), "--policy", "slurm,trainpool", "--json",
              "--load", "1.5", "--no-progress"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["estimates"]["steps"] == 64
    for p in doc["policies"]:
        e = p["estimates"]
        assert e["forecasts"]["forecasts"] >= 1
        for kind in ("at_submit", "an_hour_later"):
            f = e[kind]["all"]
            if f["jobs"]:
                assert 0 <= f["within_15m"] <= 1 and 0 <= f["within_25pct"] <= 1
                assert f["median_abs_error_s"] >= 0 and math.isfinite(f["bias_s"])
        assert e["at_submit"]["all"]["jobs"] >= e["at_submit"]["waited_over_10m"]["jobs"] > 0
        # No estimate is of a start before it was made, so errors are bounded below by the lead.
        assert e["at_submit"]["all"]["median_error_s"] >= -e["at_submit"]["all"]["median_lead_s"]
    off = CliRunner().invoke(
        app, ["sim", "--trace", str(trace), "--quotas", str(quotas), "--policy", "trainpool", "--json",
              "--no-estimates", "--no-progress"],
    )  # fmt: skip
    assert json.loads(off.output)["policies"][0]["estimates"] is None


def test_bad_estimate_options_are_refused(tmp_path: Path):
    req = one_node(tmp_path, [("0", "aa", 0, 8, 10)])
    res = CliRunner().invoke(
        app, ["sim", "--trace", str(req.trace), "--quotas", str(req.quotas), "--estimate-runtimes", "median"]
    )
    assert res.exit_code == 2 and "--estimate-runtimes" in res.output
    for bad in ("0", "soon"):
        res = CliRunner().invoke(
            app, ["sim", "--trace", str(req.trace), "--quotas", str(req.quotas), "--estimate-lateness", bad]
        )
        assert res.exit_code == 2 and "--estimate-lateness: " in res.output and "Traceback" not in res.output


def test_the_range_is_stretched_by_lateness_only_where_asked(tmp_path: Path):
    """The same replay with and without lateness: the same starts, and a range end at
    least as late; the header says which."""
    trace = write_vc_trace(tmp_path / "t.csv", random_rows(400, ("aa", "bb"), seed=3))
    quotas = write_quotas(tmp_path / "q.csv", {"aa": 1, "bb": 1})
    docs = {}
    for lateness in ("600", "none"):
        res = CliRunner().invoke(
            app, ["sim", "--trace", str(trace), "--quotas", str(quotas), "--policy", "trainpool", "--json",
                  "--load", "1.5", "--no-progress", "--estimate-lateness", lateness],
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        docs[lateness] = json.loads(res.output)
    assert [docs[k]["estimates"]["lateness_pad_s"] for k in ("600", "none")] == [600, None]
    on, off = (docs[k]["policies"][0]["estimates"]["at_submit"]["waited_over_10m"] for k in ("600", "none"))
    assert on.pop("in_range") > off.pop("in_range")
    assert on == off and on["jobs"] > 50
