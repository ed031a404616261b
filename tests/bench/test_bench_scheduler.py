"""`trainpool bench scheduler`: a small run through the CLI, the generated workload, and
the bench's own bookkeeping (checked with a naive stand-in core where the real one would
hide what is being tested)."""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import pstats
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from scheduler.bench import cli as bench_cli
from scheduler.bench.philly import PHILLY_GPU_MIX, gang_shape, philly_probabilities, sample_gpu_counts
from scheduler.bench.runner import BenchConfig, percentile, run_benchmark
from scheduler.bench.state import PoolState
from scheduler.bench.workload import (
    RACK_NODES,
    SPINE_RACKS,
    JobFactory,
    WorkloadConfig,
    build_nodes,
    build_orgs,
    capacity_by_flavor,
)
from scheduler.cli.main import app
from scheduler.collector import GcTuning
from values.decisions import Decisions
from values.snapshot import Snapshot

from .greedy_core import greedy_decide, overcommitting_decide

SMALL = ["--nodes", "200", "--jobs", "2000", "--orgs", "5", "--repeats", "3"]
REQUIRED_KEYS = {"cold_gangs_per_s", "steady_cycle_p50_s", "steady_cycle_p99_s", "peak_rss_mb"}


def _quiet(_: str) -> None:
    pass


def _over_capacity(state: PoolState) -> list[str]:
    """Recounted here from the running jobs, not trusting the bench's own counters."""
    used: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for job in state.running.values():
        gang = job.spec.gang
        assert sum(n for _, n in job.assignments) == gang.replicas, f"{job.id} is a partial gang"
        for node, replicas in job.assignments:
            used[node][0] += replicas * gang.accelerators
            used[node][1] += replicas * gang.cpu
            used[node][2] += replicas * gang.memory_gb
    nodes = {n.name: n for n in state.nodes}
    return [
        name
        for name, (acc, cpu, mem) in used.items()
        if acc > nodes[name].accelerators
        or cpu > nodes[name].cpu + 1e-6
        or mem > nodes[name].memory_gb + 1e-6
    ]


# --- a small run of the real core through the CLI ---------------------------------------


def test_small_run_prints_consistent_json_figures() -> None:
    result = CliRunner().invoke(app, ["bench", "scheduler", *SMALL, "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)

    assert figures.keys() >= REQUIRED_KEYS
    assert figures["cold_gangs_per_s"] > 0 and figures["peak_rss_mb"] > 0
    assert figures["cold_cpu_s"] > 0 and 0 < figures["steady_cpu_p50_s"] <= figures["steady_cpu_p99_s"]
    assert 0 < figures["steady_cycle_p50_s"] <= figures["steady_cycle_p99_s"]
    # Three repeats: nearest-rank p99 is the slowest cycle, and the JSON says so.
    assert figures["steady_p99_is_max"] and figures["steady_cycle_p99_s"] == figures["steady_cycle_max_s"]
    assert 0 < figures["cold_placed"] <= 2000
    assert figures["cold_placed"] + figures["cold_rejected"] + figures["pending_after_cold"] == 2000
    assert figures["cold_gangs_per_s"] == pytest.approx(figures["cold_placed"] / figures["cold_cycle_s"])
    assert figures["nodes_over_capacity"] == 0 and figures["invariant_violations"] == 0
    assert sum(figures["steady_place_reasons"].values()) == figures["steady_placed_total"]
    assert sum(figures["steady_preempt_reasons"].values()) == figures["steady_preempted_total"]
    assert figures["steady_preempted_distinct_jobs"] <= figures["steady_preempted_total"]
    assert figures["machine"]["cpu_count"] >= 1 and figures["machine"]["python_version"]
    assert "--nodes 200 --jobs 2000 --orgs 5" in figures["command"]
    assert set(figures["targets"]) == {"steady_cycle_p99_s", "cold_gangs_per_s", "peak_rss_mb"}
    assert figures["at_target_size"] is False


def test_real_core_leaves_no_node_over_capacity_after_steady_cycles() -> None:
    decide = bench_cli.load_decide()
    cfg = BenchConfig(WorkloadConfig(nodes=200, jobs=2000, orgs=5, seed=7), repeats=3)

    run = run_benchmark(cfg, decide, _quiet)

    assert run.state.running, "the real core placed nothing"
    assert _over_capacity(run.state) == []
    assert run.results["invariant_violations"] == 0, run.results["invariant_examples"]


def test_cycles_are_timed_with_the_collector_tuned_as_the_server_does_then_restored() -> None:
    thresholds: list[tuple[int, int, int]] = []

    def decide_watching(snap: Snapshot, now: float) -> Decisions:
        thresholds.append(gc.get_threshold())
        return greedy_decide(snap, now)

    before = gc.get_threshold()
    cfg = BenchConfig(WorkloadConfig(nodes=20, jobs=200, orgs=2), repeats=2)
    assert run_benchmark(cfg, decide_watching, _quiet).results["gc"] == "server"
    assert set(thresholds) == {GcTuning().thresholds}
    assert gc.get_threshold() == before

    thresholds.clear()
    run_benchmark(dataclasses.replace(cfg, gc=None), decide_watching, _quiet)
    assert set(thresholds) == {before}


def test_table_output_marks_each_target() -> None:
    result = CliRunner().invoke(app, ["bench", "scheduler", *SMALL, "--quiet"])
    assert result.exit_code == 0, result.output
    assert "gangs placed per second" in result.stdout and "peak RSS" in result.stdout
    assert result.stdout.count("met") >= 3  # "met" or "not met" for each of the three targets


# --- the workload ---------------------------------------------------------------------


def test_philly_sampler_matches_the_trace_mix_on_100k_draws() -> None:
    n = 100_000
    counts = Counter(int(x) for x in sample_gpu_counts(np.random.default_rng(1), n))
    sizes, probs = philly_probabilities()
    assert set(counts) <= set(int(s) for s in sizes)
    for size, p in zip(sizes, probs, strict=True):
        tolerance = 5 * math.sqrt(p * (1 - p) / n) + 1e-4
        assert abs(counts[int(size)] / n - p) <= tolerance, (size, counts[int(size)] / n, p)
    # The table itself is the trace's, up to the 0.015% of odd sizes.
    assert sum(share for _, share in PHILLY_GPU_MIX) == pytest.approx(0.99985)


@pytest.mark.parametrize(
    ("gpus", "shape"), [(1, (1, 1)), (4, (1, 4)), (8, (1, 8)), (16, (2, 8)), (128, (16, 8))]
)
def test_jobs_above_one_node_are_gangs_of_8_gpu_replicas(gpus: int, shape: tuple[int, int]) -> None:
    assert gang_shape(gpus) == shape


def test_pool_has_two_flavors_half_each_in_racks_of_32_and_spines_of_8_racks() -> None:
    nodes = build_nodes(WorkloadConfig(nodes=1000, jobs=1, orgs=1), np.random.default_rng(0))
    by_flavor = Counter(n.flavor for n in nodes)
    assert sorted(by_flavor.values()) == [500, 500]
    racks = Counter(n.topology.rack for n in nodes)
    assert max(racks.values()) == RACK_NODES
    racks_per_spine = Counter(spine for spine, _ in {(n.topology.spine, n.topology.rack) for n in nodes})
    assert max(racks_per_spine.values()) == SPINE_RACKS
    assert all(n.topology.rack.startswith(n.flavor) for n in nodes), "a rack holds one flavor"


def test_quotas_sum_to_the_pool_and_some_orgs_only_borrow() -> None:
    rng = np.random.default_rng(3)
    cfg = WorkloadConfig(nodes=300, jobs=1, orgs=12)
    cap = capacity_by_flavor(build_nodes(cfg, rng))
    orgs = build_orgs(cfg, cap, rng)
    for flavor, total in cap.items():
        assert sum(o.quota(flavor).nominal for o in orgs) == total
        assert all(o.quota(flavor).borrowing_limit is None for o in orgs)
    assert any(all(q.nominal == 0 for q in o.quotas.values()) for o in orgs)


def test_generated_queue_is_deterministic_per_seed_and_submitted_in_order() -> None:
    def queue(seed: int) -> list[tuple[str, str, int, float]]:
        rng = np.random.default_rng(seed)
        cfg = WorkloadConfig(nodes=100, jobs=500, orgs=6, seed=seed)
        orgs = build_orgs(cfg, capacity_by_flavor(build_nodes(cfg, rng)), rng)
        jobs = JobFactory(orgs, rng).make(500, 0.0, 1000.0)
        return [
            (j.spec.org, ",".join(j.spec.gang.flavors), j.spec.gang.total_accelerators, j.submitted_at)
            for j in jobs
        ]

    first = queue(5)
    assert first == queue(5)
    assert first != queue(6)
    submits = [s for *_, s in first]
    assert submits == sorted(submits)
    org_counts = Counter(org for org, *_ in first).most_common()
    assert org_counts[0][1] > 2 * org_counts[-1][1], "demand is skewed across orgs"
    assert any("," in flavors for _, flavors, *_ in first), "some jobs accept both flavors"


# --- the bench's bookkeeping, with stand-in cores -------------------------------------


def test_every_job_is_accounted_for_after_churn() -> None:
    cfg = BenchConfig(WorkloadConfig(nodes=100, jobs=1000, orgs=4), repeats=5)
    r = run_benchmark(cfg, greedy_decide, _quiet).results
    created = 1000 + r["steady_cycles"] * r["steady_arrivals_per_cycle"]
    ended = r["steady_finished_total"] + r["cold_rejected"] + r["steady_rejected_total"]
    assert r["running_final"] + r["pending_final"] + ended == created
    assert r["utilization_final"] > 0.9  # first fit keeps a 1%-churn pool nearly full


def test_a_core_that_overcommits_a_node_is_reported() -> None:
    cfg = BenchConfig(WorkloadConfig(nodes=20, jobs=200, orgs=2), repeats=2)
    run = run_benchmark(cfg, overcommitting_decide, _quiet)
    r = run.results
    assert r["nodes_over_capacity"] >= 1
    assert r["invariant_violations"] > r["nodes_over_capacity"]  # the bogus preemption counts too
    assert r["invariant_examples"]
    assert any("over capacity" in e for e in run.state.violations)
    assert any("not running" in e for e in run.state.violations)


def test_profiles_hold_the_steady_and_the_cold_cycles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench_cli, "load_decide", lambda: greedy_decide)
    steady, cold = tmp_path / "steady.prof", tmp_path / "cold.prof"
    args = [
        "bench",
        "scheduler",
        "--nodes",
        "50",
        "--jobs",
        "300",
        "--orgs",
        "2",
        "--repeats",
        "2",
        "--json",
        "-q",
    ]
    profiling = ["--profile", str(steady), "--profile-cycles", "2", "--profile-cold", str(cold)]
    result = CliRunner().invoke(app, [*args, *profiling])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert (figures["profile"], figures["profile_cold"]) == (str(steady), str(cold))
    for path, cycles in ((steady, 2), (cold, 1)):
        stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
        calls = {func: ncalls for (_, _, func), (_, ncalls, *_) in stats.items()}
        assert calls["greedy_decide"] == cycles and calls["snapshot"] == cycles


def test_nearest_rank_p99_is_the_max_below_100_samples() -> None:
    assert percentile([float(x) for x in range(1, 11)], 99) == 10.0
    assert percentile([float(x) for x in range(1, 11)], 50) == 5.0
    assert percentile([float(x) for x in range(1, 201)], 99) == 198.0


@pytest.mark.parametrize(
    ("args", "named"),
    [(["--nodes", "1"], "--nodes"), (["--profile", "/no/such/dir/p.prof"], "--profile")],
)
def test_bad_options_give_a_clear_error(args: list[str], named: str) -> None:
    result = CliRunner().invoke(app, ["bench", "scheduler", *args])
    assert result.exit_code != 0
    assert named in result.output
    assert "Traceback" not in result.output
