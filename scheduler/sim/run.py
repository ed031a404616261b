"""One `trainpool sim` run: read the trace and the pool, scale the load, replay every
requested policy on the same trace, seed and failures, and summarise."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scheduler.sim.engine import Decide, SimConfig, Simulation
from scheduler.sim.estimates import EstimateConfig
from scheduler.sim.failures import FailureModel, parse_failures, with_hangs, with_stragglers
from scheduler.sim.policies import get_policy, resolve
from scheduler.sim.pool import SimPool, assign_orgs, gang_shape, pool_from_config, pool_from_quotas
from scheduler.sim.quotas import load_quotas
from scheduler.sim.record import SimResult
from scheduler.sim.report import summarize
from scheduler.sim.trace import TraceError, TraceJob, load_trace

ProgressFactory = Callable[[str, int], Callable[[float, int, int], None]]


@dataclass(frozen=True)
class SimRequest:
    trace: Path
    format: str = "philly-vc"
    pool: Path | None = None
    quotas: Path | None = None
    nodes: int | None = None
    gpus_per_node: int = 8
    rack_size: int = 32
    racks_per_spine: int = 8
    flavor: str | None = None
    policy: str = "trainpool"
    load: float | None = None
    failures: str = "philly"
    hangs: str = "none"  # the hang process (sim/failures.py): none, llama3 or mtbf=SECONDS
    hang_detect_s: float | None = 600.0  # None: no detection
    hang_undetected_s: float = 7200.0
    stragglers: str = "none"  # the straggler process (sim/failures.py): none or mtbf=SECONDS
    straggler_slowdown: float = 2.0
    straggler_detect_s: float | None = 300.0  # None: no detection
    checkpoint_interval_s: float = 3600.0
    restart_overhead_s: float = 300.0
    seed: int = 0
    interval_s: float = 60.0
    grace_s: float = 30.0
    runtime_estimate: float = 1.0
    max_jobs: int | None = None
    elastic: float = 0.0  # share of multi-replica jobs made elastic (``pool.elastic``)
    grow_after_s: float | None = None  # the policy's grow_after_seconds, overridden
    # Start estimates recorded and scored (``sim/estimates.py``); None: not recorded.
    estimates: EstimateConfig | None = field(default_factory=EstimateConfig)
    command: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class SimRun:
    header: dict[str, Any]
    summaries: list[dict[str, Any]]
    results: list[SimResult]


def prepare(req: SimRequest) -> tuple[SimPool, list[TraceJob], FailureModel, dict[str, Any]]:
    _check(req)
    jobs = load_trace(req.trace, req.format)
    if req.max_jobs is not None:
        jobs = jobs[: req.max_jobs]
    quotas = load_quotas(req.quotas) if req.quotas is not None else None
    if req.format == "philly" and quotas:
        jobs = assign_orgs(jobs, quotas, req.seed)
    orgs = {j.org for j in jobs}
    if req.pool is not None:
        pool = pool_from_config(req.pool, orgs, req.flavor)
    elif quotas is not None or req.nodes is not None:
        if quotas is None and req.nodes is not None:
            # No quota file: the nodes are split equally (whole nodes) among the trace's orgs.
            quotas = dict.fromkeys(sorted(orgs), req.nodes // len(orgs))
        pool = pool_from_quotas(
            quotas or {}, orgs, req.gpus_per_node, req.nodes, req.rack_size, req.racks_per_spine
        )
    else:
        raise TraceError("give --pool FILE, --quotas FILE, or --nodes N (with --gpus-per-node)")
    native = _offered_load(jobs, pool.capacity)
    if req.load is not None:
        jobs = scale_load(jobs, native, req.load)
    shapes = [(gang_shape(j.gpus, pool.node_size)[0], j.duration) for j in jobs]
    model = parse_failures(
        req.failures, shapes, pool.node_size, req.checkpoint_interval_s, req.restart_overhead_s
    )
    model = with_hangs(model, req.hangs, pool.node_size, req.hang_detect_s, req.hang_undetected_s)
    model = with_stragglers(model, req.stragglers, req.straggler_slowdown, req.straggler_detect_s)
    header = {
        "trace": str(req.trace),
        "format": req.format,
        "jobs": len(jobs),
        "load": req.load if req.load is not None else "as traced",
        "native_offered_load": native,
        "seed": req.seed,
        "interval_s": req.interval_s,
        "grace_s": req.grace_s,
        "runtime_estimate": req.runtime_estimate,
        **(
            {
                "elastic": {
                    "fraction": req.elastic,
                    "min_replicas": "half, rounded up",
                    "grow_after_s": req.grow_after_s,
                    "model": "throughput linear in size",
                }
            }
            if req.elastic > 0
            else {}
        ),
        "estimates": _estimate_header(req.estimates),
        "capacity": pool.capacity,
        "nodes": len(pool.nodes),
        "orgs": {o.name: o.quota(pool.flavor).nominal for o in pool.orgs},
        "failure_model": model.describe(),
        "node_mtbf_s": model.node_mtbf_s,
        "command": req.command,
    }
    return pool, jobs, model, header


def run(
    req: SimRequest,
    decide: Decide | None = None,
    progress: ProgressFactory | None = None,
    jobs: int | None = 1,
) -> SimRun:
    """Replay every requested policy. ``jobs`` worker processes replay policies side by
    side (None: one per policy, up to the CPUs this process may use); 1, or an injected
    ``decide`` (which cannot cross a process boundary), replays them one after another in
    this process. The replay is deterministic, so both give the same summaries."""
    names = resolve(req.policy)
    if jobs is not None and jobs < 1:
        raise TraceError("--jobs: must be >= 1")
    pool, trace, model, header = prepare(req)
    config = SimConfig(
        req.interval_s,
        req.grace_s,
        req.runtime_estimate,
        req.seed,
        req.estimates,
        req.elastic,
        req.grow_after_s,
    )
    workers = min(len(names), jobs if jobs is not None else usable_cpus())
    replay = _Replay(pool, trace, model, config, 2 * req.interval_s + req.grace_s)
    if decide is not None or workers <= 1:
        outcomes = {}
        for name in names:
            tick = progress(name, len(trace)) if progress is not None else None
            outcomes[name] = replay.run(name, decide, tick)
    else:
        from scheduler.sim.parallel import replay_in_workers

        outcomes = replay_in_workers(replay, _longest_first(names), workers, progress)
    return SimRun(header, [outcomes[n][0] for n in names], [outcomes[n][1] for n in names])


@dataclass(frozen=True)
class _Replay:
    """Everything one policy's replay needs besides the policy: built once, sent whole
    to each worker process."""

    pool: SimPool
    trace: list[TraceJob]
    model: FailureModel
    config: SimConfig
    allowance_s: float  # a guarantee violation longer than this counts (2 cycles + grace)

    def run(
        self, name: str, decide: Decide | None = None, tick: Callable[[float, int, int], None] | None = None
    ) -> tuple[dict[str, Any], SimResult]:
        policy = get_policy(name)
        sim = Simulation(self.pool, self.trace, policy, self.model, self.config, decide=decide, progress=tick)
        result = sim.run()
        if tick is not None:
            tick(*result.progress_at_end())
        return summarize(result, self.model, policy.description, self.allowance_s), result


# Relative CPU cost of one replay, measured on the VC subset (see README, Performance):
# the pool's workers take the dearest first, so the cheap ones fill in at the end.
EXPECTED_COST = {"slurm": 3.5, "fifo": 3.0, "tiresias": 2.0, "trainpool": 1.0, "kueue": 1.0}


def _longest_first(names: list[str]) -> list[str]:
    return sorted(names, key=lambda n: -EXPECTED_COST.get(n, 1.0))


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def scale_load(jobs: list[TraceJob], native: float, target: float) -> list[TraceJob]:
    """Stretch or compress inter-arrival times so the offered load becomes ``target``."""
    if native <= 0:
        return jobs
    factor = native / target
    t0 = jobs[0].submit
    return [TraceJob(j.id, j.org, (j.submit - t0) * factor, j.gpus, j.duration) for j in jobs]


def _offered_load(jobs: list[TraceJob], capacity: int) -> float:
    span = jobs[-1].submit - jobs[0].submit
    work = sum(j.gpus * j.duration for j in jobs)
    return work / (capacity * span) if span > 0 and capacity > 0 else 0.0


def _estimate_header(cfg: EstimateConfig | None) -> dict[str, Any] | None:
    if cfg is None:
        return None
    b = cfg.budget
    return {
        "steps": b.steps,
        "horizon_s": b.horizon_s,
        "resolution_s": b.resolution_s,
        "refresh_s": cfg.refresh_s,
        "runtime_percentile": cfg.percentile,
        "range_percentile": cfg.high,
        "lateness_pad_s": cfg.lateness_pad_s,
        "later_s": cfg.later_s,
    }


def _check(req: SimRequest) -> None:
    checks = [
        (req.load is None or req.load > 0, "--load: must be > 0"),
        (req.interval_s > 0, "--interval: must be > 0 seconds"),
        (req.grace_s >= 0, "--grace: must be >= 0 seconds"),
        (req.runtime_estimate >= 1.0, "--runtime-estimate: must be >= 1 (a lower limit kills jobs)"),
        (req.max_jobs is None or req.max_jobs >= 1, "--max-jobs: must be >= 1"),
        (0.0 <= req.elastic <= 1.0, "--elastic: must be a fraction in [0, 1]"),
        (req.grow_after_s is None or req.grow_after_s >= 0, "--grow-after: must be >= 0 seconds"),
        (req.pool is None or req.pool.is_file(), f"--pool: {req.pool} does not exist or is not a file"),
    ]
    for ok, message in checks:
        if not ok:
            raise TraceError(message)
