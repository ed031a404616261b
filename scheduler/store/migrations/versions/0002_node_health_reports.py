"""node health reports from agents

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Batch mode: SQLite cannot add columns with constraints in place; Alembic copies the table.
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reported_health", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("reported_reason", sa.Text(), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("reported_at", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_column("reported_at")
        batch_op.drop_column("reported_reason")
        batch_op.drop_column("reported_health")
