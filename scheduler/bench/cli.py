"""`trainpool bench`: benchmark commands."""

from __future__ import annotations

import importlib
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated, cast

import typer
from rich.console import Console

from scheduler.bench.report import TARGET_SIZE, add_targets, render_table
from scheduler.bench.runner import BenchConfig, Decide, run_benchmark
from scheduler.bench.workload import WorkloadConfig
from scheduler.collector import GcTuning
from scheduler.control.loop_place import LoopPlace

bench_app = typer.Typer(help="Measure the scheduler on this machine.", no_args_is_help=True)


def _fail(message: str) -> typer.Exit:
    Console(stderr=True).print(f"[red]error:[/] {message}", highlight=False)
    return typer.Exit(code=1)


def load_decide() -> Decide:
    """The decision core, imported late so that `bench --help` works without it."""
    try:
        core = importlib.import_module("scheduler.core")
    except ImportError as exc:
        raise _fail(f"the decision core (scheduler.core) cannot be imported: {exc}") from None
    decide = getattr(core, "decide", None)
    if decide is None:
        raise _fail("the decision core has no `decide` yet (scheduler.core.decide)")
    return cast(Decide, decide)


def _canonical_command(cfg: BenchConfig, as_json: bool) -> str:
    """The command line that reproduces this run, every option spelled out."""
    w = cfg.workload
    args = ["trainpool", "bench", "scheduler", "--nodes", w.nodes, "--jobs", w.jobs, "--orgs", w.orgs]
    args += ["--seed", w.seed, "--repeats", cfg.repeats, "--degraded", w.degraded_fraction]
    if cfg.profile_path is not None:
        args += ["--profile", cfg.profile_path, "--profile-cycles", cfg.profile_cycles]
    if cfg.profile_cold_path is not None:
        args += ["--profile-cold", cfg.profile_cold_path]
    if cfg.gc is None:
        args.append("--gc-default")
    if as_json:
        args.append("--json")
    return shlex.join(str(a) for a in args)


@bench_app.command("scheduler")
def bench_scheduler(
    nodes: Annotated[
        int, typer.Option(min=2, max=1_000_000, help="Nodes of 8 accelerators, half per flavor.")
    ] = (TARGET_SIZE["nodes"]),
    jobs: Annotated[int, typer.Option(min=1, max=10_000_000, help="Jobs queued before the cold cycle.")] = (
        TARGET_SIZE["jobs"]
    ),
    orgs: Annotated[int, typer.Option(min=1, max=10_000, help="Organizations sharing the pool.")] = (
        TARGET_SIZE["orgs"]
    ),
    seed: Annotated[int, typer.Option(min=0, help="Seed of the generated pool and queue.")] = 0,
    repeats: Annotated[int, typer.Option(min=1, max=100_000, help="Steady cycles to time.")] = 20,
    degraded: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of nodes marked degraded (no multi-node gangs).")
    ] = 0.01,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of a table.")
    ] = False,
    profile: Annotated[
        Path | None,
        typer.Option(
            help="Write a cProfile stats file of extra steady cycles run after the timed ones "
            "(the timed figures are never taken under the profiler).",
            dir_okay=False,
        ),
    ] = None,
    profile_cycles: Annotated[int, typer.Option(min=1, max=1000, help="Steady cycles to profile.")] = 5,
    profile_cold: Annotated[
        Path | None,
        typer.Option(
            help="Write a cProfile stats file of the cold cycle, run again on the same workload "
            "after the timed run.",
            dir_okay=False,
        ),
    ] = None,
    gc_default: Annotated[
        bool,
        typer.Option(
            "--gc-default",
            help="Leave the garbage collector at the interpreter's defaults (default: tuned as "
            "the server's loop process tunes it).",
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines on stderr.")] = False,
    traceback: Annotated[
        bool, typer.Option("--traceback", help="Show the traceback if the core fails.")
    ] = False,
) -> None:
    """Time the decision core on a synthetic pool and a Philly-mix queue (issue 2's targets)."""
    for option, path in (("--profile", profile), ("--profile-cold", profile_cold)):
        if path is not None and not path.parent.resolve().is_dir():
            raise _fail(f"{option}: directory {path.parent} does not exist")
    cfg = BenchConfig(
        workload=WorkloadConfig(nodes=nodes, jobs=jobs, orgs=orgs, seed=seed, degraded_fraction=degraded),
        repeats=repeats,
        profile_path=profile,
        profile_cycles=profile_cycles,
        profile_cold_path=profile_cold,
        gc=None if gc_default else GcTuning(),
    )
    decide = load_decide()
    err = Console(stderr=True, highlight=False)
    started = time.perf_counter()

    def progress(line: str) -> None:
        if not quiet:
            err.print(f"[dim]{time.perf_counter() - started:7.1f}s[/] {line}", soft_wrap=True)

    try:
        run = run_benchmark(cfg, decide, progress)
    except Exception as exc:
        if traceback:
            raise
        raise _fail(f"the benchmark failed: {type(exc).__name__}: {exc} (rerun with --traceback)") from None
    results = run.results
    results["command"] = _canonical_command(cfg, as_json)
    results["argv"] = sys.argv
    add_targets(results)
    if as_json:
        typer.echo(json.dumps(results, indent=2))
    else:
        render_table(results, Console())


DbOption = Annotated[
    str | None,
    typer.Option(help="PostgreSQL URL of an empty database (postgresql+psycopg://...); default: SQLite."),
]


def _print_summary(summary: dict[str, object], as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        console = Console()
        for key, value in summary.items():
            console.print(f"{key:>24}: {value}", highlight=False)


@bench_app.command("api")
def bench_api(
    jobs: Annotated[int, typer.Option(min=1, max=1_000_000, help="Submissions to send.")] = 10_000,
    clients: Annotated[int, typer.Option(min=1, max=1000, help="Concurrent clients.")] = 50,
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Start a server (sim backend, loop on) on a fresh database and submit jobs to it from
    concurrent clients: submissions per second, latency percentiles, errors."""
    from scheduler.api.loadgen import bench_new_server

    Console(stderr=True).print(
        f"starting a server on {'PostgreSQL' if db else 'SQLite'}, "
        f"then {jobs} submissions from {clients} clients",
        highlight=False,
    )
    try:
        result = bench_new_server(db, jobs=jobs, clients=clients)
    except (OSError, RuntimeError) as exc:
        raise _fail(f"the load run failed: {exc}") from None
    summary = {
        "benchmark": "api",
        "database": "postgresql" if db else "sqlite",
        "clients": clients,
        **result.summary(),
        "command": shlex.join(["trainpool", *sys.argv[1:]]),
    }
    _print_summary(summary, as_json)
    if result.errors:
        raise typer.Exit(code=1)


@bench_app.command("churn")
def bench_churn(
    seconds: Annotated[float, typer.Option(min=1, max=3600, help="Arrival window, seconds.")] = 60.0,
    rate: Annotated[float, typer.Option(min=0.1, max=10_000, help="Submissions per second offered.")] = 25.0,
    orgs: Annotated[int, typer.Option(min=1, max=1000, help="Orgs sharing the pool.")] = 8,
    nodes: Annotated[int, typer.Option(min=20, max=10_000, help="1-accelerator nodes.")] = 160,
    seed: Annotated[int, typer.Option(help="Seed of the arrival stream.")] = 0,
    api_probe: Annotated[
        int, typer.Option(min=0, max=1_000_000, help="`bench api` submissions sent mid-window.")
    ] = 0,
    time_limit: Annotated[
        float | None, typer.Option(min=0.2, help="Each gang's max_runtime_seconds (default: none).")
    ] = None,
    priorities: Annotated[
        bool, typer.Option(help="Mix low, normal and high (--no-priorities: all normal, no preemption).")
    ] = True,
    min_runtime: Annotated[
        float, typer.Option(min=0, max=3600, help="Every priority class's min_runtime_seconds.")
    ] = 0.0,
    loop: Annotated[LoopPlace, typer.Option(help="Where the control loop runs.")] = LoopPlace.PROCESS,
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Stream short gangs (1, 5 and 20 replicas, 0.2-1 s) over HTTP into a real server (sim
    backend) at a fixed rate: wall time against its lower bound, accepted rate, time to
    admission by size, usage."""
    from scheduler.bench.churn import Churn, ChurnOptions, offered_load

    opts = ChurnOptions(db=db, orgs=orgs, nodes=nodes, rate=rate, seconds=seconds, seed=seed,
                        api_probe=api_probe, time_limit=time_limit,
                        priorities=priorities, min_runtime=min_runtime, loop=loop.value)  # fmt: skip
    err = Console(stderr=True)
    err.print(
        f"{int(rate * seconds)} gangs at {rate:g}/s on {nodes} nodes (offered load "
        f"{offered_load(opts):.2f}), {'PostgreSQL' if db else 'SQLite'}",
        highlight=False,
    )
    with err.status("starting the server") as status:
        try:
            report = Churn(opts, lambda line: status.update(line)).run()
        except (OSError, RuntimeError) as exc:
            raise _fail(f"the churn run failed: {exc}") from None
    results = {"benchmark": "churn", **report.as_dict(), "command": shlex.join(["trainpool", *sys.argv[1:]])}
    _print_summary(results, as_json)
    if not all(report.targets.values()):
        raise typer.Exit(code=1)


@bench_app.command("loop")
def bench_loop(
    running: Annotated[
        int,
        typer.Option(
            min=1, max=1_000_000, help="Jobs whose sizes set the pool: about what the cold cycle starts."
        ),
    ] = 10_000,
    pending: Annotated[int, typer.Option(min=0, max=1_000_000, help="Jobs left waiting.")] = 40_000,
    orgs: Annotated[int, typer.Option(min=1, max=1000, help="Orgs sharing the pool.")] = 20,
    cycles: Annotated[int, typer.Option(min=1, max=1000, help="Steady cycles to time.")] = 10,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the job sizes and durations.")] = 0,
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Time the live control loop's cycle, phase by phase, on a store of RUNNING running and
    PENDING pending jobs (Philly sizes, sim backend): a cold cycle, then steady cycles in
    which about 1% of running jobs end and 1% new jobs arrive."""
    from scheduler.bench.live import LiveBench, LiveOptions

    err = Console(stderr=True, highlight=False)
    opts = LiveOptions(running=running, pending=pending, orgs=orgs, cycles=cycles, db=db, seed=seed)
    err.print(f"filling a {'PostgreSQL' if db else 'SQLite'} store with {running + pending:,} jobs")
    started = time.perf_counter()
    result = LiveBench(
        opts, lambda line: err.print(f"[dim]{time.perf_counter() - started:7.1f}s[/] {line}")
    ).run()
    result["command"] = shlex.join(["trainpool", *sys.argv[1:]])
    _print_summary(result, as_json)
