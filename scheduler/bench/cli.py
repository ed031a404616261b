"""`trainpool bench`: benchmark commands."""

import typer

bench_app = typer.Typer(help="Measure the scheduler on this machine.", no_args_is_help=True)
