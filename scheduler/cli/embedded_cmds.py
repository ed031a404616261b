"""`trainpool up` and `trainpool demo`: the whole pool on one machine."""

from __future__ import annotations

import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Annotated

import typer

from scheduler.cli.client import err

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="Pool file (default: 6 simulated nodes, 3 orgs).")
]


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(2)


def up(
    config: ConfigOpt = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Database, token, checkpoints, logs.")
    ] = None,
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="0: any free port.")] = 8642,
) -> None:
    """Start a local pool: a Ray cluster of simulated accelerator nodes, the server on SQLite.

    Prints the URL and the admin token; Ctrl-C stops everything it started."""
    from scheduler.embedded.runtime import EmbeddedOptions, EmbeddedPool
    from values.errors import ConfigError

    pool = EmbeddedPool(
        EmbeddedOptions(config=config, data_dir=data_dir, port=port),
        say=lambda line: typer.echo(line, err=True),
    )
    try:
        pool.start()
    except ConfigError as exc:
        for line in exc.lines():
            err.print(f"[red]error:[/red] {line}", highlight=False)
        raise typer.Exit(2) from None
    except (RuntimeError, OSError, ValueError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"trainpool is up: {pool.url}  (data in {pool.data_dir})")
    typer.echo(f"admin token: {pool.token}  (kept in {pool.data_dir / 'admin-token'}, mode 0600)")
    typer.echo("use it from another shell:")
    typer.echo(f"  export TRAINPOOL_URL={pool.url}")
    typer.echo(f"  export TRAINPOOL_TOKEN=$(cat {pool.data_dir / 'admin-token'})")
    typer.echo("  trainpool nodes list; trainpool submit examples/jobs/...")
    typer.echo("Ctrl-C stops the pool.")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        typer.echo("stopping: server, control loop, Ray cluster ...", err=True)
        pool.stop()
        typer.echo("stopped; nothing left running", err=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def demo(
    config: ConfigOpt = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the demo's data folder.")] = False,
) -> None:
    """Run the scripted scenario on a fresh embedded pool; exit 0 only if every check holds."""
    from rich.console import Console

    from scheduler.embedded.demo import DemoFailed, run_demo
    from scheduler.embedded.runtime import EmbeddedOptions

    folder = Path(tempfile.mkdtemp(prefix="trainpool-demo-"))
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops the demo as Ctrl-C does: cleanly
    try:
        ok = run_demo(EmbeddedOptions(config=config, data_dir=folder, port=0), Console())
    except DemoFailed as exc:
        raise _fail(str(exc)) from None
    finally:
        if keep:
            typer.echo(f"demo data kept in {folder}", err=True)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    raise typer.Exit(0 if ok else 1)
