"""Every waiting job's start estimate, as the live server stores and shows it: the
reserved head gang keeps the core's own estimate and words, the jobs behind it get the
forward replay's, and a job waiting on jobs without runtime limits says so instead."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scheduler.control.forecasting import Forecaster, ForecastSettings, learned_runtimes
from scheduler.core import decide
from values.domain import Flavor, Gang, JobSpec
from values.snapshot import PendingJob, RunningJob, Snapshot

from .api_harness import Api, make_api
from .harness import nodes, orgs

LONG = {"SIM_DURATION": "5000"}
NODE = {"flavor": "h100", "accelerators": 8}


@pytest.fixture
def api(tmp_path: Path) -> Api:
    made = make_api(f"sqlite:///{tmp_path / 'pool.db'}")
    made.cycle()  # the loop learns the nodes (4 x 8 h100; a and b own 16 each)
    return made


def _queue(api: Api, who: str = "member@a") -> dict[str, dict[str, Any]]:
    return {j["id"]: j for j in api.call(who, "GET", "/v1/queue").json()}


def _fill(api: Api, limits: tuple[float | None, ...]) -> float:
    """One whole-node job per limit, a's first two and b's last two: the pool is full."""
    for i, limit in enumerate(limits):
        extra = {} if limit is None else {"max_runtime_seconds": limit}
        api.submit(f"member@{'ab'[i // 2]}", org="ab"[i // 2], gang=NODE, env=LONG, **extra)
    admitted = api.clock()
    api.cycle()
    return admitted


def test_the_jobs_behind_the_reserved_head_gang_get_the_replays_estimates(api: Api) -> None:
    # a's jobs end at +1000 and +2000, b's at +3000 and +4000. p1 reserves the node freed
    # at +1000 and runs until +1500; p2 then takes p1's node.
    admitted = _fill(api, (1000, 2000, 3000, 4000))
    p1 = api.submit("member@a", gang=NODE, env=LONG, max_runtime_seconds=500)
    api.clock.t += 1
    p2 = api.submit("member@a", gang=NODE, env=LONG, max_runtime_seconds=500)
    api.cycle(60)  # the last forecast (at the cycle that filled the pool) is a minute old

    queue = _queue(api)
    head, behind = queue[p1["id"]], queue[p2["id"]]
    assert head["reason"] == "reserved"
    assert head["estimated_start"] == pytest.approx(admitted + 1000, abs=1)
    assert "reaches its 1000 s runtime limit" in head["message"]
    assert behind["estimated_start"] == pytest.approx(admitted + 1500, abs=1)
    assert behind["message"].endswith(
        "estimated start from a forward replay of the pool, with runtime limits (at the latest)"
    )
    # The same figures where describe reads them.
    shown = api.call("member@a", "GET", f"/v1/jobs/{p2['id']}").json()
    assert (shown["estimated_start"], shown["message"]) == (behind["estimated_start"], behind["message"])


def test_a_job_waiting_on_jobs_without_runtime_limits_says_its_start_is_unknown(api: Api) -> None:
    _fill(api, (None, None, None, None))
    api.submit("member@a", gang=NODE, env=LONG, max_runtime_seconds=500)
    api.clock.t += 1
    p2 = api.submit("member@a", gang=NODE, env=LONG, max_runtime_seconds=500)
    api.cycle(60)

    behind = _queue(api)[p2["id"]]
    assert behind["estimated_start"] is None
    assert behind["message"].endswith("start unknown: it waits for jobs without a runtime limit")


def test_estimates_are_refreshed_within_the_budget_not_at_every_cycle(api: Api) -> None:
    _fill(api, (1000, 2000, 3000, 4000))
    api.submit("member@a", gang=NODE, env=LONG, max_runtime_seconds=500)
    forecaster = api.host.loop.forecaster
    api.cycle()
    first = forecaster.last_at
    api.cycle(1)  # nothing changed, and the last forecast is a second old
    assert forecaster.last_at == first
    api.submit("member@a", gang=NODE, env=LONG, max_runtime_seconds=500)
    api.cycle(1)  # a new job, but within the least gap between forecasts
    assert forecaster.last_at == first
    api.cycle(forecaster.settings.min_gap_s)
    assert forecaster.last_at is not None and first is not None and forecaster.last_at > first
    assert "forecast" in api.host.loop.phases


def test_runtimes_are_learned_from_the_orgs_finished_jobs(api: Api) -> None:
    # Ten of a's jobs run 100 s of their 1000 s limits: a's jobs are expected to run a
    # tenth of their limits; b has finished nothing, so its jobs run to their limits.
    for _ in range(10):
        api.submit("member@a", gang={"flavor": "h100", "accelerators": 2}, env={"SIM_DURATION": "100"},
                   max_runtime_seconds=1000)  # fmt: skip
    for _ in range(4):
        api.cycle(60)
    with api.ctx.db.read() as s:
        learned = learned_runtimes(s, ForecastSettings())
    assert set(learned.ratios) == {"a"} and len(learned.ratios["a"]) == 10
    assert all(0.1 <= r <= 0.25 for r in learned.ratios["a"])  # 100 s, and up to a cycle to see it


def test_a_forecast_slower_than_its_budget_gets_fewer_steps_the_next_time() -> None:
    # One node, busy until 1000; two jobs wait, the second until 1500.
    def spec(name: str, limit: float) -> JobSpec:
        gang = Gang(accelerators=8, flavors=("h100",))
        return JobSpec(name=name, org="a", gang=gang, max_runtime_seconds=limit)

    snap = Snapshot(
        flavors=(Flavor(name="h100"),),
        nodes=tuple(nodes(1)),
        orgs=orgs(a=8),
        running=(RunningJob("r", spec("r", 1000), 500, 0, 0, "h100", (("h100-00", 1),)),),
        pending=(PendingJob("p", spec("p", 500), 500, 1), PendingJob("q", spec("q", 500), 500, 2)),
    )
    ticks = iter(range(0, 1000, 10))  # every forecast seems to take 10 s
    settings = ForecastSettings(budget_s=2.0, max_steps=64, min_steps=8)
    forecaster = Forecaster(settings, timer=lambda: next(ticks))
    got = forecaster.statuses(snap, 100, decide(snap, 100))
    assert got["q"].estimated_start == 1500.0
    assert forecaster.last_seconds == 10 and forecaster.steps == 8  # 2 s at 10 s for 3 steps: the floor
    again = forecaster.statuses(snap, 110, decide(snap, 110))  # too soon for another forecast
    assert forecaster.last_seconds == 10 and again["q"] == got["q"]


def test_the_range_ends_as_late_as_past_jobs_started_against_their_estimates() -> None:
    # p is told at 100 that it starts at 1000 (when r ends); it starts at 3000 (overtaken,
    # say): 2,900 s of lead against 900, 3500 / 1500 with the 600 s pad. Told at 3000 that
    # it starts at 8000 (p's 5000 s limit), q's range then ends at 3000 + (5000 + 600) x
    # 3500/1500 - 600.
    def spec(name: str, limit: float) -> JobSpec:
        return JobSpec(
            name=name, org="a", gang=Gang(accelerators=8, flavors=("h100",)), max_runtime_seconds=limit
        )

    def snap(running: tuple[RunningJob, ...], pending: tuple[PendingJob, ...]) -> Snapshot:
        return Snapshot(flavors=(Flavor(name="h100"),), nodes=tuple(nodes(1)), orgs=orgs(a=8),
                        running=running, pending=pending)  # fmt: skip

    forecaster = Forecaster(ForecastSettings())
    assert forecaster.lateness is not None
    forecaster.lateness.min_samples = 1
    first = snap((RunningJob("r", spec("r", 1000), 500, 0, 0, "h100", (("h100-00", 1),)),),
                 (PendingJob("p", spec("p", 5000), 500, 50),))  # fmt: skip
    told = forecaster.statuses(first, 100, decide(first, 100))
    assert told["p"].estimated_start == 1000.0 and forecaster.lateness.samples == 0
    later = snap((RunningJob("p", spec("p", 5000), 500, 50, 3000, "h100", (("h100-00", 1),)),),
                 (PendingJob("q", spec("q", 500), 500, 2900),))  # fmt: skip
    forecaster.last_at = None  # due now
    forecaster.statuses(later, 3000, decide(later, 3000))
    assert forecaster.lateness.samples == 1
    q = forecaster.estimates["q"]
    # p's limit is 5000 s but its start is 3000: q starts at 8000 at the latest.
    assert q.start == 8000.0
    assert q.high == pytest.approx(3000 + (5000 + 600) * 3500 / 1500 - 600)
