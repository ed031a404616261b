"""`trainpool sim`: replay a trace through the scheduler in virtual time."""

from __future__ import annotations

import json
import math
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from scheduler.sim.failures import FailureSpecError
from scheduler.sim.parallel import WorkerDied
from scheduler.sim.trace import TraceError
from values.errors import ConfigError

sim_app = typer.Typer(help="Replay a workload trace through the scheduler in virtual time.")


@sim_app.callback(invoke_without_command=True)
def sim(
    trace: Path = typer.Option(..., "--trace", help="Trace file (see --format)."),
    fmt: str = typer.Option("philly-vc", "--format", help="Trace format: philly-vc or philly."),
    pool: Path | None = typer.Option(None, "--pool", help="Pool config (pool.yaml)."),
    quotas: Path | None = typer.Option(None, "--quotas", help="Tenant quotas in nodes (vc,node num)."),
    nodes: int | None = typer.Option(None, "--nodes", help="Nodes in the pool (default: sum of quotas)."),
    gpus_per_node: int = typer.Option(8, "--gpus-per-node", help="Accelerators per node."),
    rack_size: int = typer.Option(32, "--rack-size", help="Nodes per rack."),
    policy: str = typer.Option(
        "trainpool", "--policy", help="fifo, slurm, kueue, tiresias, trainpool or all."
    ),
    load: float | None = typer.Option(None, "--load", help="Scale arrivals to this offered load."),
    failures: str = typer.Option("philly", "--failures", help="none, philly, llama3 or mtbf=SECONDS."),
    hangs: str = typer.Option(
        "none", "--hangs", help="Gangs that stop stepping: none, llama3 or mtbf=SECONDS."
    ),
    hang_detect: float = typer.Option(
        600.0, "--hang-detect", help="Seconds from a hang to the pool's stop (its hang limit)."
    ),
    hang_detection: bool = typer.Option(
        True, "--hang-detection/--no-hang-detection", help="Without it, a hang lasts --hang-undetected."
    ),
    hang_undetected: float = typer.Option(
        7200.0, "--hang-undetected", help="Seconds an undetected hang lasts (someone notices)."
    ),
    stragglers: str = typer.Option(
        "none", "--stragglers", help="Gangs slowed by a fail-slow node: none or mtbf=SECONDS (per node)."
    ),
    straggler_slowdown: float = typer.Option(2.0, "--straggler-slowdown", help="How much slower (> 1)."),
    straggler_detect: float = typer.Option(
        300.0, "--straggler-detect", help="Seconds from the onset to the verdict (then break-even)."
    ),
    straggler_detection: bool = typer.Option(
        True, "--straggler-detection/--no-straggler-detection", help="Without it, a slowed gang stays slow."
    ),
    checkpoint_interval: float = typer.Option(3600.0, "--checkpoint-interval", help="Seconds."),
    restart_overhead: float = typer.Option(300.0, "--restart-overhead", help="Seconds per restart."),
    interval: float = typer.Option(60.0, "--interval", help="Scheduling cycle interval, seconds."),
    grace: float = typer.Option(30.0, "--grace", help="Preemption grace period, seconds."),
    runtime_estimate: float = typer.Option(
        1.0, "--runtime-estimate", help="Job runtime limit = this x run time (backfill input)."
    ),
    estimates: bool = typer.Option(
        True, "--estimates/--no-estimates", help="Record every job's start estimate and score it."
    ),
    estimate_steps: int = typer.Option(64, "--estimate-steps", min=2, help="Decide calls per forecast."),
    estimate_refresh: float = typer.Option(
        300.0, "--estimate-refresh", min=0.0, help="Least virtual seconds between forecasts."
    ),
    estimate_runtimes: str = typer.Option(
        "50",
        "--estimate-runtimes",
        help="Runtimes the forecast assumes: 'limits', or a percentile of the org's learned "
        "runtime/limit ratios.",
    ),
    estimate_range: str = typer.Option(
        "90", "--estimate-range", help="The range's runtime percentile, or 'none'."
    ),
    estimate_lateness: str = typer.Option(
        "600",
        "--estimate-lateness",
        help="Stretch the range's end by how late past jobs started against their estimates, "
        "with this pad in seconds; or 'none'.",
    ),
    elastic: float = typer.Option(
        0.0, "--elastic", help="Share of multi-replica jobs made elastic (minimum: half their replicas)."
    ),
    grow_after: float | None = typer.Option(
        None, "--grow-after", help="Seconds an elastic gang runs before it may grow (default: the policy's)."
    ),
    seed: int = typer.Option(0, "--seed"),
    max_jobs: int | None = typer.Option(None, "--max-jobs", help="Replay only the first N jobs."),
    out: Path | None = typer.Option(None, "--out", help="Write summary.json, summary.md and plots here."),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON summary to stdout."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bar on stderr."),
    jobs: int | None = typer.Option(
        None,
        "--jobs",
        "-j",
        help="Policies replayed at once, in worker processes (default: one per policy, up to "
        "the CPUs; 1: one after another in this process).",
    ),
) -> None:
    from scheduler.sim.run import SimRequest, run

    try:
        estimate_config = _estimate_config(
            estimates, estimate_steps, estimate_refresh, estimate_runtimes, estimate_range, estimate_lateness
        )
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    request = SimRequest(
        trace=trace,
        format=fmt,
        pool=pool,
        quotas=quotas,
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        rack_size=rack_size,
        policy=policy,
        load=load,
        failures=failures,
        hangs=hangs,
        hang_detect_s=hang_detect if hang_detection else None,
        hang_undetected_s=hang_undetected,
        stragglers=stragglers,
        straggler_slowdown=straggler_slowdown,
        straggler_detect_s=straggler_detect if straggler_detection else None,
        checkpoint_interval_s=checkpoint_interval,
        restart_overhead_s=restart_overhead,
        seed=seed,
        interval_s=interval,
        grace_s=grace,
        runtime_estimate=runtime_estimate,
        max_jobs=max_jobs,
        elastic=elastic,
        grow_after_s=grow_after,
        estimates=estimate_config,
        command="trainpool sim " + " ".join(shlex.quote(a) for a in sys.argv[2:]),
    )
    try:
        with _progress_bar(progress and sys.stderr.isatty()) as factory:
            outcome = run(request, progress=factory, jobs=jobs)
    except (TraceError, FailureSpecError, ConfigError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except WorkerDied as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    document = {**outcome.header, "policies": outcome.summaries}
    from scheduler.sim.report import markdown

    table = markdown(outcome.summaries, outcome.header)
    if out is not None:
        from scheduler.sim.plots import write_plots

        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps(_clean(document), indent=2) + "\n")
        (out / "summary.md").write_text(table)
        write_plots(outcome.results, out)
    typer.echo(json.dumps(_clean(document), indent=2) if as_json else table)


def _estimate_config(on: bool, steps: int, refresh: float, runtimes: str, spread: str, lateness: str) -> Any:
    from scheduler.core.forecast import Budget
    from scheduler.sim.estimates import EstimateConfig

    if not on:
        return None

    def percentile(text: str, option: str, word: str) -> float | None:
        if text == word:
            return None
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not 0 < value <= 100:
            raise ValueError(f"{option}: '{text}' is neither '{word}' nor a percentile in (0, 100]")
        return value

    try:
        pad = None if lateness == "none" else float(lateness)
    except ValueError:
        pad = -1.0
    if pad is not None and not (pad > 0 and math.isfinite(pad)):
        raise ValueError(f"--estimate-lateness: '{lateness}' is neither 'none' nor seconds > 0")
    return EstimateConfig(
        budget=Budget(steps=steps),
        refresh_s=refresh,
        percentile=percentile(runtimes, "--estimate-runtimes", "limits"),
        high=percentile(spread, "--estimate-range", "none"),
        lateness_pad_s=pad,
    )


def _clean(value: Any) -> Any:
    """JSON has no NaN or infinity: write null instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


class _progress_bar:
    """A rich progress bar per policy on stderr, or nothing when not on a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._progress: Any = None

    def __enter__(self) -> Callable[[str, int], Callable[[float, int, int], None]] | None:
        if not self.enabled:
            return None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("day {task.fields[day]:.1f}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._progress.start()
        bar = self._progress

        def factory(name: str, total: int) -> Callable[[float, int, int], None]:
            task = bar.add_task(name, total=total, day=0.0)

            def tick(t: float, done: int, _total: int) -> None:
                bar.update(task, completed=done, day=t / 86400)

            return tick

        return factory

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
