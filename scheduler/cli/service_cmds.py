"""`trainpool server`, and where the commands that talk to it join the app.

Those commands (``jobs_cmds``, ``pool_cmds``) are thin on purpose: one or two API calls
and a printer. Errors from the server arrive as one line (``ClientError``); the exit code
tells a refusal (1) from no answer (3).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from scheduler.cli.client import err
from scheduler.control.loop_place import LoopPlace
from scheduler.control.wake import Pace

if TYPE_CHECKING:
    from scheduler.collector import GcTuning

# --- server --------------------------------------------------------------------------


def _gc_tuning() -> GcTuning:
    """TRAINPOOL_GC_THRESHOLD="g0,g1,g2" and TRAINPOOL_GC_EVERY=seconds between full
    collections (for experiments), else the tuned defaults."""
    from scheduler.collector import GcTuning

    default = GcTuning()
    text = os.environ.get("TRAINPOOL_GC_THRESHOLD", ",".join(map(str, default.thresholds)))
    try:
        g0, g1, g2 = (int(x) for x in text.split(","))
    except ValueError:
        err.print(
            f"[red]error:[/red] TRAINPOOL_GC_THRESHOLD: '{text}' is not three integers", highlight=False
        )
        raise typer.Exit(2) from None
    every = os.environ.get("TRAINPOOL_GC_EVERY", str(default.every))
    try:
        seconds = float(every)
        if not seconds > 0:
            raise ValueError
    except ValueError:
        err.print(
            f"[red]error:[/red] TRAINPOOL_GC_EVERY: '{every}' is not a positive number", highlight=False
        )
        raise typer.Exit(2) from None
    return GcTuning(thresholds=(g0, g1, g2), every=seconds)


def _key_values(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            err.print(f"[red]error:[/red] {flag}: '{item}' is not KEY=VALUE", highlight=False)
            raise typer.Exit(2)
        out[key] = value
    return out


def _networks(items: list[str], flag: str) -> tuple[str, ...]:
    import ipaddress

    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            err.print(f"[red]error:[/red] {flag}: '{item}' is not an IP address or network", highlight=False)
            raise typer.Exit(2) from None
    return tuple(items)


def server(
    db: Annotated[str | None, typer.Option("--db", help="SQLite path or postgresql+psycopg:// URL.")] = None,
    pool: Annotated[Path | None, typer.Option("--pool", help="The pool file (flavors, orgs, nodes).")] = None,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8642,
    backend: Annotated[str, typer.Option("--backend", help="sim, ray or kubernetes.")] = "sim",
    address: Annotated[
        str | None, typer.Option("--address", help="Ray cluster address, or kubeconfig path / 'in-cluster'.")
    ] = None,
    backend_opt: Annotated[
        list[str] | None, typer.Option("--backend-opt", help="KEY=VALUE for the backend; repeatable.")
    ] = None,
    checkpoint_root: Annotated[
        str | None,
        typer.Option("--checkpoint-root", help="Shared checkpoint folder (default: beside the db)."),
    ] = None,
    sim_state: Annotated[str | None, typer.Option("--sim-state", help="Sim backend state file.")] = None,
    sim_duration: Annotated[
        float, typer.Option("--sim-duration", min=0, help="Default sim job seconds.")
    ] = 60.0,
    interval: Annotated[
        float,
        typer.Option(
            "--interval",
            min=0.01,
            envvar="TRAINPOOL_INTERVAL",
            help="Most seconds between cycles (backends are polled at least this often).",
        ),
    ] = 1.0,
    batch_delay: Annotated[
        float,
        typer.Option(
            "--batch-delay",
            min=0,
            envvar="TRAINPOOL_BATCH_DELAY",
            help="Seconds from a change (submit, cancel, node) to its cycle: a burst is one cycle.",
        ),
    ] = Pace.batch_delay,
    min_gap: Annotated[
        float,
        typer.Option(
            "--min-gap",
            min=0,
            envvar="TRAINPOOL_MIN_GAP",
            help="Fewest seconds between the end of a cycle and the next.",
        ),
    ] = Pace.min_gap,
    loop: Annotated[
        LoopPlace,
        typer.Option(
            "--loop",
            envvar="TRAINPOOL_LOOP",
            help="Where the control loop runs: a child process (its CPU leaves the API's alone) or a thread.",
        ),
    ] = LoopPlace.PROCESS,
    lease_ttl: Annotated[float, typer.Option("--lease-ttl", min=0.5, help="Leader lease seconds.")] = 10.0,
    trusted_proxy: Annotated[
        list[str] | None,
        typer.Option(
            "--trusted-proxy",
            help="Address or network (CIDR) of a proxy whose X-Forwarded-For is believed; repeatable.",
        ),
    ] = None,
) -> None:
    """Run the pool service: HTTP API, control loop and metrics."""
    import logging

    from sqlalchemy.exc import SQLAlchemyError

    from scheduler.control.loop_process import LoopStartError
    from scheduler.control.options import ServerOptions
    from scheduler.control.root import LOG_FORMAT, Root
    from scheduler.store.db import DatabaseURLError
    from values.errors import ConfigError

    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    opts = ServerOptions(
        db=db, pool=str(pool) if pool else None, backend=backend, backend_address=address,
        backend_options=_key_values(backend_opt or [], "--backend-opt"), checkpoint_root=checkpoint_root,
        sim_state=sim_state, sim_duration=sim_duration, lease_ttl=lease_ttl, loop=loop, gc=_gc_tuning(),
        pace=Pace(interval=interval, batch_delay=batch_delay, min_gap=min_gap),
        trusted_proxies=_networks(trusted_proxy or [], "--trusted-proxy"),
    )  # fmt: skip
    try:
        root = Root(opts, say=lambda line: typer.echo(line, err=True))
        root.start()
    except ConfigError as exc:
        for line in exc.lines():
            err.print(f"[red]error:[/red] {line}", highlight=False)
        raise typer.Exit(2) from None
    except (DatabaseURLError, ValueError, OSError, LoopStartError) as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        err.print(f"[red]error:[/red] --db: cannot use the database: {reason}", highlight=False)
        raise typer.Exit(2) from None
    typer.echo(f"trainpool server on http://{host}:{port} (API under /v1, docs at /docs)", err=True)
    root.serve(host, port)


def register(app: typer.Typer) -> None:
    """Add the server and the commands that talk to it to the `trainpool` app."""
    from scheduler.cli import jobs_cmds, pool_cmds

    app.command("server")(server)
    jobs_cmds.register(app)
    pool_cmds.register(app)
