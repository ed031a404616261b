"""/metrics after a few cycles: names follow Prometheus conventions, labels are bounded."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .api_harness import Api, make_api

ALLOWED_LABELS = {
    "org",
    "flavor",
    "reason",
    "kind",
    "health",
    "method",
    "route",
    "status",
    "le",
    "quantile",
    "phase",
}


@pytest.fixture
def busy(tmp_path: Path) -> Iterator[str]:
    api: Api = make_api(f"sqlite:///{tmp_path / 'pool.db'}")
    with api.client:
        for i in range(6):
            api.submit("member@a" if i % 2 else "member@b", org="a" if i % 2 else "b",
                       gang={"flavor": "h100", "accelerators": 8}, env={"SIM_DURATION": "3"})  # fmt: skip
        for _ in range(3):
            api.cycle(1)
        api.call("member@a", "GET", "/v1/jobs/j-missing")
        yield api.call("pool-admin", "GET", "/metrics").text


def test_metric_names_and_labels(busy: str) -> None:
    families = list(text_string_to_metric_families(busy))
    names = {f.name for f in families}
    assert all(n.startswith("trainpool_") for n in names)
    for family in families:
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)
        if family.type == "histogram":
            assert family.name.endswith("_seconds")
        for sample in family.samples:
            assert set(sample.labels) <= ALLOWED_LABELS, sample
            assert not any(v.startswith("j-") for v in sample.labels.values()), sample
    running = {
        s.labels["org"]: s.value for f in families if f.name == "trainpool_running_jobs" for s in f.samples
    }
    assert running == {"a": 2.0, "b": 2.0}  # 4 nodes of 8, each org at its nominal 16
    assert "trainpool_scheduling_cycle_seconds" in names and "trainpool_fair_share" in names
    phases = {
        s.labels["phase"]
        for f in families
        if f.name == "trainpool_scheduling_phase_seconds"
        for s in f.samples
    }
    assert {"observe", "snapshot", "decide", "act"} <= phases
    routes = {
        s.labels.get("route")
        for f in families
        if f.name == "trainpool_api_request_seconds"
        for s in f.samples
    }
    assert "/v1/jobs/{job_id}" in routes


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (apt-get install prometheus)"
)
def test_promtool_accepts_the_metrics(busy: str) -> None:
    result = subprocess.run(["promtool", "check", "metrics"], input=busy, text=True, capture_output=True)
    assert result.returncode == 0, result.stdout + result.stderr
