"""`trainpool bench soak`: a long run of the real server under a compressed trace day."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from scheduler.cli.client import err


def soak(
    trace: Annotated[Path, typer.Option("--trace", help="A philly-vc trace (jobs with tenants).")],
    quotas: Annotated[Path, typer.Option("--quotas", help="Tenant quotas in nodes (vc,node num).")],
    db: Annotated[str, typer.Option("--db", help="SQLite path or postgresql+psycopg:// URL (fresh).")],
    minutes: Annotated[
        float, typer.Option("--minutes", min=0.1, help="Wall time the day is compressed into.")
    ] = 30.0,
    day: Annotated[
        int | None, typer.Option("--day", min=0, help="Trace day (0-based; default: busiest).")
    ] = None,
    sample: Annotated[float, typer.Option("--sample", min=1.0, help="Seconds between samples.")] = 15.0,
    fail_fraction: Annotated[float, typer.Option("--fail-fraction", min=0, max=1)] = 0.10,
    max_jobs: Annotated[int | None, typer.Option("--max-jobs", min=1)] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Folder for soak.json and soak.png.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Run the server (sim backend) under a compressed day of a trace; watch memory and cycles."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from scheduler.sim.trace import TraceError
    from scheduler.soak import Soak, SoakOptions

    opts = SoakOptions(
        trace=trace, quotas=quotas, db=db, day=day, seconds=minutes * 60, sample=sample,
        fail_fraction=fail_fraction, out=out, max_jobs=max_jobs,
    )  # fmt: skip
    columns = (TextColumn("soak"), BarColumn(), TimeRemainingColumn(), TextColumn("{task.description}"))
    try:
        with Progress(*columns, transient=True, disable=as_json) as bar:
            task = bar.add_task("starting the server", total=1.0)
            report = Soak(opts, lambda done, text: bar.update(task, completed=done, description=text)).run()
    except (TraceError, RuntimeError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(
            json.dumps({**report.__dict__, "samples": [s.__dict__ for s in report.samples], "ok": report.ok})
        )
    else:
        last = report.samples[-1] if report.samples else None
        typer.echo(f"jobs: {report.submitted} submitted, {report.stored} stored, {report.terminal} finished, "
                   f"{report.in_flight} still in flight; submit errors {report.submit_errors}")  # fmt: skip
        typer.echo(f"memory: {last.rss_mib if last else 0:.0f} MiB at the end, "
                   f"{report.rss_growth_mib_per_hour:+.1f} MiB/hour over the second half")  # fmt: skip
        typer.echo(f"cycle mean: {report.cycle_mean_first_ms:.1f} ms in the first fifth, "
                   f"{report.cycle_mean_last_ms:.1f} ms in the last")  # fmt: skip
        for problem in report.history_problems:
            typer.echo(f"history: {problem}")
        typer.echo("every job accounted for" if report.ok else "PROBLEMS: see above")
    raise typer.Exit(0 if report.ok else 1)
