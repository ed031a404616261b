"""Entry point of the `trainpool` command: one typer app, sub-apps registered here."""

from __future__ import annotations

import typer

from agents.cli import agent
from scheduler.bench.cli import bench_app
from scheduler.cli.embedded_cmds import demo, up
from scheduler.cli.plan import plan, validate
from scheduler.cli.service_cmds import register
from scheduler.cli.soak_cmd import soak
from scheduler.sim.cli import sim_app

app = typer.Typer(
    name="trainpool",
    help="Scheduler of a shared accelerator pool: gang jobs, fair-share quotas, health-aware placement.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
bench_app.command("soak")(soak)
app.add_typer(bench_app, name="bench")
app.add_typer(sim_app, name="sim")
app.command("up")(up)
app.command("demo")(demo)
app.command("plan")(plan)
app.command("validate")(validate)
app.command("agent")(agent)
register(app)


if __name__ == "__main__":
    app()
