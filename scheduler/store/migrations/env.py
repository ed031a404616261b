"""Alembic environment: runs on the connection handed in by ``scheduler.store.db.upgrade``."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import scheduler.store.tables  # noqa: F401  (registers the tables on SQLModel.metadata)

config = context.config
target_metadata = SQLModel.metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("trainpool migrations run through scheduler.store.db.upgrade()")
    # render_as_batch lets ALTER TABLE work on SQLite (copy-and-move) in later revisions.
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
