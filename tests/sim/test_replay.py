"""Replays through the real core: the simulator applies exactly what ``decide`` returns,
the same seed gives the same output, and every policy runs a small mixed workload."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from scheduler.core import decide
from scheduler.sim.engine import SimConfig, Simulation
from scheduler.sim.failures import FailureModel, parse_failures
from scheduler.sim.policies import POLICY_NAMES, get_policy
from scheduler.sim.pool import pool_from_quotas
from scheduler.sim.run import SimRequest, run
from scheduler.sim.trace import TraceJob
from values.decisions import Decisions
from values.snapshot import Snapshot

from .helpers import random_rows, write_quotas, write_vc_trace

ORGS = ("aa", "bb", "cc")
QUOTAS = {"aa": 2, "bb": 1}  # cc has no row: nominal 0, may only borrow
FAILURES = FailureModel("mtbf", node_mtbf_s=20 * 3600.0, checkpoint_interval_s=600.0, restart_overhead_s=60.0)


def tiny_trace(n: int = 60, seed: int = 1) -> list[TraceJob]:
    return [TraceJob(i, vc, s, g, d) for i, vc, s, g, d in random_rows(n, ORGS, seed)]


def replay(policy: str, seed: int = 0, observer: object = None) -> Simulation:
    pool = pool_from_quotas(QUOTAS, set(ORGS), node_size=8, rack_size=2)
    sim = Simulation(
        pool,
        tiny_trace(),
        get_policy(policy),
        FAILURES,
        SimConfig(seed=seed),
        observer=observer,  # type: ignore[arg-type]
    )
    sim.result = sim.run()  # type: ignore[attr-defined]
    return sim


def test_every_cycle_applies_exactly_what_decide_returns_for_that_snapshot() -> None:
    seen: list[tuple[Snapshot, float, Decisions]] = []
    sim = replay("trainpool", observer=lambda snap, now, dec: seen.append((snap, now, dec)))
    assert len(seen) > 20 and any(dec.placements for _, _, dec in seen)
    for snap, now, dec in seen:
        assert decide(snap, now) == dec
    # Each placement shows up in the next cycle's snapshot on the same nodes, unless the
    # job ended (completed or interrupted) before that cycle.
    for (_, _, dec), (nxt, now, _) in itertools.pairwise(seen):
        running = {r.id: r for r in nxt.running}
        for p in dec.placements:
            if p.job_id in running:
                assert running[p.job_id].assignments == p.assignments
            else:
                rec = sim.jobs[p.job_id].rec
                assert (rec.end is not None and rec.end <= now) or rec.failures or rec.preemptions


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_every_policy_finishes_a_small_mixed_workload_without_overcommitting(policy: str) -> None:
    capacity = {"n000": 8, "n001": 8, "n002": 8}

    def check(snap: Snapshot, now: float, dec: Decisions) -> None:
        used = dict.fromkeys(capacity, 0)
        placed = {p.job_id: p.assignments for p in dec.placements}
        jobs = [(r.assignments, r.spec.gang.accelerators) for r in snap.running]
        pending = {j.id: j for j in snap.pending}
        jobs += [(a, pending[jid].spec.gang.accelerators) for jid, a in placed.items()]
        for assignments, acc in jobs:
            for node, k in assignments:
                used[node] += k * acc
        assert all(used[n] <= capacity[n] for n in capacity), (now, used)

    sim = replay(policy, observer=check)
    result = sim.result  # type: ignore[attr-defined]
    assert result.unfinished == 0
    done = [j for j in result.jobs if j.end is not None]
    assert len(done) + sum(1 for j in result.jobs if j.rejected) == len(result.jobs)
    assert all(j.end >= j.submit + j.duration for j in done)


def without_wall_times(summary: dict[str, Any]) -> dict[str, Any]:
    """A summary less what the machine's speed decides (the replay's and the forecasts' seconds)."""
    out = {k: v for k, v in summary.items() if k != "wall_s"}
    if out.get("estimates"):
        out["estimates"] = {
            **out["estimates"],
            "forecasts": {**out["estimates"]["forecasts"], "wall_s": None},
        }
    return out


def test_same_seed_same_output_and_the_seed_moves_the_failures(tmp_path: Path) -> None:
    trace = write_vc_trace(tmp_path / "t.csv", random_rows(50, ORGS, seed=3))
    quotas = write_quotas(tmp_path / "q.csv", QUOTAS)

    def summary(seed: int) -> list[dict[str, object]]:
        req = SimRequest(trace=trace, quotas=quotas, policy="all", failures="mtbf=30000", seed=seed)
        return [without_wall_times(s) for s in run(req).summaries]

    first = summary(5)
    assert first == summary(5)
    assert [s["failures"] for s in first] != [s["failures"] for s in summary(6)]


def test_tiresias_preempts_a_job_that_has_had_more_service_for_a_newcomer() -> None:
    pool = pool_from_quotas({"aa": 1}, {"aa", "bb"}, node_size=8)
    jobs = [TraceJob("old", "aa", 0.0, 8, 36_000.0), TraceJob("new", "bb", 3600.0, 8, 600.0)]
    model = parse_failures("none", [], 8, checkpoint_interval_s=1800.0)
    result = Simulation(pool, jobs, get_policy("tiresias"), model).run()
    old, new = (next(j for j in result.jobs if j.id == name) for name in ("jold", "jnew"))
    assert result.preemptions == {"service": 1}
    assert new.first_start is not None and new.first_start <= 3600 + 30 + 60
    assert old.lost_preemption_acc_s == pytest.approx((3630 - 3600) * 8)  # checkpoint at 3600 kept
    # Kueue-like (quotas, no service-based preemption): the newcomer waits for the 10-hour job.
    kueue = Simulation(pool, jobs, get_policy("kueue"), model).run()
    assert next(j for j in kueue.jobs if j.id == "jnew").first_start == 36_000.0


def test_load_scaling_compresses_arrivals_to_the_requested_offered_load(tmp_path: Path) -> None:
    trace = write_vc_trace(
        tmp_path / "t.csv",
        [
            ("1", "aa", 0, 8, 1000),
            ("2", "aa", 1000, 8, 1000),
            ("3", "aa", 2000, 8, 1000),
        ],
    )
    quotas = write_quotas(tmp_path / "q.csv", {"aa": 1})
    out = run(SimRequest(trace=trace, quotas=quotas, load=1.5, failures="none"))
    # Native load: 3 x 8 x 1000 / (8 x 2000) = 1.5; asking 1.5 keeps times, 0.75 doubles them.
    assert out.header["native_offered_load"] == pytest.approx(1.5)
    assert out.summaries[0]["utilization"]["offered_load"] == pytest.approx(1.5)
    slower = run(SimRequest(trace=trace, quotas=quotas, load=0.75, failures="none"))
    assert slower.summaries[0]["utilization"]["offered_load"] == pytest.approx(0.75)
    assert slower.summaries[0]["makespan_s"] == pytest.approx(5000)
