"""The soak machinery on a short run (the 30-minute runs are recorded in the README)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scheduler.cli.main import app

TRACES = Path(__file__).resolve().parents[3] / "shared" / "traces"
pytestmark = [pytest.mark.slow, pytest.mark.integration]


@pytest.mark.skipif(not TRACES.is_dir(), reason=f"the Philly traces are not at {TRACES}")
def test_a_short_soak_accounts_for_every_job_and_records_samples(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "bench", "soak", "--trace", str(TRACES / "philly_vc_subset_TUNE_days0-75.csv"),
            "--quotas", str(TRACES / "philly_vc_quota_helios_artifact.csv"),
            "--db", str(tmp_path / "pool.db"), "--minutes", "0.5", "--sample", "5", "--max-jobs", "150",
            "--out", str(out),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "soak.json").read_text())
    assert report["ok"] and report["submitted"] == report["stored"] == 150
    assert report["terminal"] + report["in_flight"] == 150
    assert len(report["samples"]) >= 4 and all(s["rss_mib"] > 0 for s in report["samples"])
    assert (out / "soak.png").stat().st_size > 10_000
