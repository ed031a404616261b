"""``python -m agents ...`` runs ``trainpool agent ...``."""

import typer

from agents.cli import agent

typer.run(agent)
