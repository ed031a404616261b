"""Entry point of the `trainpool` command: one typer app, sub-apps registered here."""

from __future__ import annotations

from typing import Annotated

import typer

from agents.cli import agent
from scheduler.bench.cli import bench_app
from scheduler.cli.embedded_cmds import demo, up
from scheduler.cli.plan import plan, validate
from scheduler.cli.service_cmds import register
from scheduler.cli.soak_cmd import soak
from scheduler.cli.whatif_cmd import whatif
from scheduler.sim.cli import sim_app

app = typer.Typer(
    name="trainpool",
    help="Scheduler of a shared accelerator pool: gang jobs, fair-share quotas, health-aware placement.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"trainpool {version('trainpool')}")
        except PackageNotFoundError:  # run from a checkout without installing
            typer.echo("trainpool (not installed: version unknown)")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Scheduler of a shared accelerator pool: gang jobs, fair-share quotas, health-aware placement."""


bench_app.command("soak")(soak)
app.add_typer(bench_app, name="bench")
app.add_typer(sim_app, name="sim")
app.command("up")(up)
app.command("demo")(demo)
app.command("plan")(plan)
app.command("validate")(validate)
app.command("agent")(agent)
app.command("whatif")(whatif)
register(app)


if __name__ == "__main__":
    app()
