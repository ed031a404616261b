"""Replays of the real Philly traces in ../shared/traces (never copied into the repo).
Skipped, with the reason, where that folder is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.sim.quotas import load_quotas
from scheduler.sim.run import SimRequest, run
from scheduler.sim.trace import load_trace

REPO = Path(__file__).resolve().parents[2]
CANDIDATES = (Path("/work/shared/traces"), REPO.parent / "shared" / "traces")
TRACES = next((p for p in CANDIDATES if (p / "philly_vc_subset_TUNE_days0-75.csv").is_file()), None)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(TRACES is None, reason="the Philly traces are not in ../shared/traces here"),
]


def test_full_philly_log_loads_every_job() -> None:
    assert TRACES is not None
    jobs = load_trace(TRACES / "philly_full_TUNE_days0-75.csv", "philly")
    assert len(jobs) == 65_082 and all(j.gpus >= 1 for j in jobs)


def test_vc_subset_replays_under_every_policy_with_the_vc_quotas() -> None:
    assert TRACES is not None
    req = SimRequest(
        trace=TRACES / "philly_vc_subset_TUNE_days0-75.csv",
        quotas=TRACES / "philly_vc_quota_helios_artifact.csv",
        policy="all",
        load=0.9,
        max_jobs=300,
    )
    out = run(req)
    assert out.header["capacity"] == 352 * 8
    quotas = load_quotas(TRACES / "philly_vc_quota_helios_artifact.csv")
    nominal = out.header["orgs"]
    assert {o: n for o, n in nominal.items() if o in quotas} == {o: 8 * n for o, n in quotas.items()}
    assert all(n == 0 for o, n in nominal.items() if o not in quotas)  # only borrow
    for s in out.summaries:
        assert s["unfinished"] == 0
        assert s["completed"] + sum(s["rejected"].values()) == 300
