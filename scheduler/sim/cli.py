"""`trainpool sim`: replay a trace through the scheduler in virtual time."""

import typer

sim_app = typer.Typer(help="Replay a workload trace through the scheduler in virtual time.")
