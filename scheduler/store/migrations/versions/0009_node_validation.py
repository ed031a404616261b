"""node validation before hand-over: each node's validation state, run, peer and tries

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nodes") as t:
        t.add_column(sa.Column("validation", sa.String(length=16), nullable=True))
        t.add_column(sa.Column("validation_message", sa.Text(), nullable=False, server_default=""))
        t.add_column(sa.Column("validation_at", sa.Float(), nullable=True))
        t.add_column(sa.Column("validation_run", sa.Integer(), nullable=False, server_default="0"))
        t.add_column(sa.Column("validation_peer", sa.String(length=63), nullable=True))
        t.add_column(sa.Column("validation_tries", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("nodes") as t:
        for name in ("validation_tries", "validation_peer", "validation_run", "validation_at",
                     "validation_message", "validation"):  # fmt: skip
            t.drop_column(name)
