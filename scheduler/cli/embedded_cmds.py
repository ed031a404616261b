"""`trainpool up` and `trainpool demo`: the whole pool on one machine."""

from __future__ import annotations

import shlex
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


def instructions(
    url: str, data_dir: Path, config: Path, default_pool: bool, cwd: Path | None = None
) -> list[str]:
    """What `up` tells its user to type in another shell: the server and token through
    the environment (which wins over any context of the client's config file), then a
    first job: the example written for the default pool, else how to check one's own
    job against the pool before submitting it."""
    from scheduler.embedded.runtime import example_job

    token_file = shlex.quote(str(data_dir / "admin-token"))
    lines = [
        "use it from another shell:",
        f"  export TRAINPOOL_URL={url}",
        f"  export TRAINPOOL_TOKEN=$(cat {token_file})",
        "  trainpool nodes list",
    ]
    example = example_job(cwd) if default_pool else None
    if example is not None:
        lines.append(f"  trainpool submit {shlex.quote(str(example))} --wait    # a first job, 2 x 2 sim-gpu")
    else:
        pool = shlex.quote(str(config))
        lines.append(f"  trainpool validate --pool {pool} JOB.yaml && trainpool submit JOB.yaml --wait")
    return lines


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
    for line in instructions(pool.url, pool.data_dir, pool.config_path, default_pool=config is None):
        typer.echo(line)
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
